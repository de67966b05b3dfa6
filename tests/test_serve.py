"""`coca-video serve` over a scored folder of synthetic clips: the JSON API against the search code and numpy, every
traversal variant, the token, the limits, Range requests, reloads, Ctrl-C, and the page in headless chromium
(COCA_VIDEO_SHOTS=DIR saves its screenshots there)."""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import coca_video  # noqa: E402
from coca_video.config import load_config  # noqa: E402
from coca_video.errors import ConfigError  # noqa: E402
from coca_video.data.synthetic import COLOURS, SyntheticVideos  # noqa: E402
from coca_video.io import atomic_write_table  # noqa: E402
from coca_video.search import search  # noqa: E402
from coca_video.serve.app import create_app  # noqa: E402
from coca_video.serve.library import Library  # noqa: E402
from coca_video.tasks import score, serve  # noqa: E402
from coca_video.video import VideoReader, write_video  # noqa: E402

from helpers import REPO  # noqa: E402

HOSTILE = "<img src=x onerror=alert(1)>.mp4"
NAMES = ["purple.mp4", HOSTILE, "red.mp4", "blue.mp4", "gone.mp4", "swapped.mp4"]  # scenes 0-5 of seed 3
SECRET = "top secret text, never to be served"


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> dict:
    """Six 4 s clips scored in 2 s segments with labels and captions; then gone.mp4 is deleted and swapped.mp4
    replaced by a link to a text file (rows whose files changed after scoring)."""
    root = tmp_path_factory.mktemp("serve")
    videos = root / "videos"
    videos.mkdir()
    clips = SyntheticVideos(6, size=64, num_frames=32, seed=3, split="test", p_reference=0.0)
    colours = {}
    for index, name in enumerate(NAMES):
        write_video(videos / name, clips[index][0], fps=8)
        colours[name] = clips.scene(index).main.colour
    assert [colours[n] for n in NAMES[:4]] == ["purple", "orange", "red", "blue"]  # what the queries below rely on
    labels = root / "colours.txt"
    labels.write_text("\n".join(COLOURS) + "\n")
    out = root / "scores.parquet"
    score.run(load_config(score.ScoreConfig, None, [
        f"videos={videos}", f"out={out}", f"labels={labels}", "decode.num_frames=4", "decode.workers=0",
        "segment_seconds=2", "caption=true", "caption.method=greedy", "top_k=1"]))
    (videos / "gone.mp4").unlink()
    (root / "secret.txt").write_text(SECRET)
    (videos / "swapped.mp4").unlink()
    (videos / "swapped.mp4").symlink_to(root / "secret.txt")
    (videos / "link.mp4").symlink_to(root / "secret.txt")
    frame = VideoReader(str(root / "videos" / "purple.mp4")).get_frames(np.array([12]))[0]
    image = root / "purple.png"
    from PIL import Image

    Image.fromarray(frame).save(image)
    return {"root": root, "videos": videos, "out": out, "embeddings": score.embeddings_path(out), "image": image}


@pytest.fixture(scope="module")
def server(scored) -> serve.ServerState:
    cfg = load_config(serve.ServeConfig, None, [f"embeddings={scored['embeddings']}", f"scores={scored['out']}"])
    return serve.build_server(cfg)


@pytest.fixture(scope="module")
def client(server) -> TestClient:
    return TestClient(create_app(server), base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def live(server):
    """The app on a real uvicorn at 127.0.0.1:<free port> in a thread: (host, port)."""
    yield from run_live(server)


def run_live(server: serve.ServerState):
    import uvicorn

    sock = serve.bind("127.0.0.1", 0)
    app_server = uvicorn.Server(uvicorn.Config(create_app(server), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=app_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(400):
        if app_server.started:
            break
        time.sleep(0.05)
    yield "127.0.0.1", sock.getsockname()[1]
    app_server.should_exit = True
    thread.join(timeout=10)


def stored(embeddings: Path) -> tuple[list[str], np.ndarray, list[float]]:
    """The rows with an embedding, read straight from the Parquet file: paths, (N, D) vectors, segment starts."""
    table = pq.read_table(embeddings)
    table = table.filter(table.column("video_embedding").is_valid())
    vectors = np.array(table.column("video_embedding").to_pylist(), dtype=np.float32)
    return table.column("path").to_pylist(), vectors, table.column("segment_start").to_pylist()


def name_of(hit: dict) -> str:
    return Path(hit["path"]).name


# -- the API against independent answers ------------------------------------------------------------------------------
def test_text_search_returns_what_the_search_command_returns_and_the_right_clip_first(client, scored):
    found = client.get("/api/search", params={"q": "a purple circle", "k": 12}).json()
    expected = search(scored["embeddings"], "a purple circle", k=12)
    assert [(h["path"], h["start"]) for h in found["results"]] == [(h.path, h.start) for h in expected]
    assert np.allclose([h["score"] for h in found["results"]], [h.score for h in expected], atol=1e-5)
    assert name_of(found["results"][0]) == "purple.mp4" and found["total"] == 12
    top = found["results"][0]
    assert top["label"] == "purple" and "purple" in top["caption"] and top["available"]
    assert set(top) >= {"id", "path", "start", "end", "score", "video_url", "thumbnail_url", "label", "caption"}


def test_pages_and_filters_are_slices_of_the_full_ranking(client):
    full = client.get("/api/search", params={"q": "a red circle", "k": 12}).json()["results"]
    page = client.get("/api/search", params={"q": "a red circle", "k": 3, "offset": 3}).json()["results"]
    assert [h["id"] for h in page] == [h["id"] for h in full[3:6]]
    red = client.get("/api/search", params={"q": "a red circle", "k": 12, "label": "red"}).json()
    assert [h["id"] for h in red["results"]] == [h["id"] for h in full if h["label"] == "red"]
    assert red["total"] == sum(h["label"] == "red" for h in full) >= 2
    blue = client.get("/api/search", params={"q": "a red circle", "k": 12, "path": "BLUE"}).json()
    assert [h["id"] for h in blue["results"]] == [h["id"] for h in full if "blue" in h["path"]]


def test_more_like_this_ranks_other_videos_by_the_stored_embedding(client, scored):
    paths, vectors, _ = stored(scored["embeddings"])
    seed = paths.index(str(scored["videos"] / "red.mp4"))
    found = client.get("/api/similar", params={"id": seed, "k": 5}).json()
    others = [i for i, p in enumerate(paths) if p != paths[seed]]
    expected = sorted(others, key=lambda i: -float(vectors[i] @ vectors[seed]))[:5]
    assert [h["id"] for h in found["results"]] == expected
    assert all(h["path"] != paths[seed] for h in found["results"]) and found["total"] == len(others)


def test_an_image_query_goes_through_the_image_encoder(client, scored):
    import torch

    model = coca_video.create_model("default")
    from PIL import Image

    with torch.no_grad():
        query = model.encode_image(coca_video.image_transform(model)(Image.open(scored["image"]))[None])[0].numpy()
    paths, vectors, _ = stored(scored["embeddings"])
    found = client.post("/api/image", params={"k": 4}, content=scored["image"].read_bytes(),
                        headers={"Content-Type": "image/png"}).json()
    assert [h["id"] for h in found["results"]] == list(np.argsort(-(vectors @ query), kind="stable")[:4])
    assert name_of(found["results"][0]) == "purple.mp4"


# -- files: Range, missing, traversal -------------------------------------------------------------------------------
def row_of(client, name: str, start: float = 0.0) -> dict:
    hits = client.get("/api/search", params={"q": "a shape", "k": 12}).json()["results"]
    return next(h for h in hits if name_of(h) == name and h["start"] == start)


def test_range_requests_get_206_with_exactly_those_bytes(client, scored):
    hit = row_of(client, "purple.mp4")
    data = (scored["videos"] / "purple.mp4").read_bytes()
    whole = client.get(hit["video_url"])
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    for header, expected, first, last in [("bytes=100-199", data[100:200], 100, 199),
                                          ("bytes=-50", data[-50:], len(data) - 50, len(data) - 1),
                                          (f"bytes={len(data) - 10}-", data[-10:], len(data) - 10, len(data) - 1)]:
        part = client.get(hit["video_url"], headers={"Range": header})
        assert part.status_code == 206 and part.content == expected
        assert part.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    assert client.get(hit["video_url"], headers={"Range": f"bytes={len(data) + 5}-"}).status_code == 416
    thumbnail = client.get(hit["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"  # a JPEG
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(thumbnail.content))).astype(int)  # the 64x64 clip, letterboxed
    assert pixels.shape == (72, 128, 3)  # 16:9 like the page's card: shown whole, nothing cropped
    assert pixels[:, :26].max() < 24 and pixels[:, 102:].max() < 24  # the square frame is 72x72, bars 28 px a side
    assert pixels[:, 30:98].std() > 10  # the frame itself in between


def test_a_deleted_video_gets_a_message_and_the_server_keeps_running(client):
    hit = row_of(client, "gone.mp4")
    assert not hit["available"] and not row_of(client, "swapped.mp4")["available"]
    answer = client.get(hit["video_url"])
    assert answer.status_code == 404 and "video file missing" in answer.json()["error"]
    assert "gone.mp4" in answer.json()["error"]
    assert client.get(hit["thumbnail_url"]).status_code == 404
    assert client.get("/api/meta").status_code == 200


def raw_get(host: str, port: int, target: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client-side normalisation of dots or escapes)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", f"{host}:{port}")
    for key, value in (headers or {}).items():
        conn.putheader(key, value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_every_traversal_variant_gets_404(live, client, scored):
    host, port = live
    swapped = row_of(client, "swapped.mp4")  # a scored row whose file became a link to a text file
    absolute = str(scored["root"] / "secret.txt")
    targets = [
        "/video/../../etc/passwd", "/video/..%2F..%2Fetc%2Fpasswd", "/video/%2e%2e/%2e%2e/etc/passwd",
        "/video/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/video/..%252F..%252Fetc%252Fpasswd", "/video//etc/passwd",
        "/video/%2Fetc%2Fpasswd", "/video/0/../../../etc/passwd", "/video/0%2F..%2F..%2Fetc%2Fpasswd",
        "/video/..\\..\\etc\\passwd", "/video/C:%5Cwindows%5Cwin.ini", "/video/-1", "/video/1e3", "/video/0x1",
        "/video/%201", "/video/99999", "/video/1.0", "/video/" + absolute, "/video/" + absolute.replace("/", "%2F"),
        "/video/purple.mp4", "/video/link.mp4", "/thumbnail/../../etc/passwd", "/thumbnail/..%2F..%2Fetc%2Fpasswd",
        "/thumbnail/link.mp4", "/../../etc/passwd", "//etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
        "/static/../../etc/passwd", "/api/../video/0", swapped["video_url"], swapped["thumbnail_url"],
    ]
    for target in targets:
        status, body = raw_get(host, port, target)
        assert status == 404, (target, status, body[:100])
        assert SECRET.encode() not in body and b"root:" not in body
        assert "error" in json.loads(body), target


# -- the token, the Host header, the limits ---------------------------------------------------------------------------
def test_a_token_is_required_on_everything_but_the_empty_page(server):
    guarded = TestClient(create_app(dataclasses.replace(server, token="s3cret")), base_url="http://127.0.0.1")
    for url in ("/api/meta", "/api/search?q=a+red+circle", "/api/similar?id=0", "/video/0", "/thumbnail/0"):
        assert guarded.get(url).status_code == 401, url
        assert guarded.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401, url
        assert guarded.get(url, headers={"Authorization": "Bearer s3cret"}).status_code == 200, url
    assert guarded.post("/api/image", content=b"x").status_code == 401
    assert guarded.get("/api/meta", cookies={"coca_video_token": "s3cret"}).status_code == 200
    page = guarded.get("/")
    assert page.status_code == 200 and "purple.mp4" not in page.text  # the page holds no data, it asks for the token


def test_a_foreign_host_header_is_refused_on_loopback(client):
    assert client.get("/api/meta", headers={"Host": "evil.example:8000"}).status_code == 421
    assert client.get("/api/meta", headers={"Host": "localhost:8000"}).status_code == 200


def test_each_limit_is_a_4xx_with_a_message_and_the_server_keeps_running(client, scored):
    cases = [
        (client.get("/api/search", params={"q": "x" * 501}), 400, "at most 500"),
        (client.get("/api/search", params={"q": "a", "path": "x" * 501}), 400, "at most 500"),
        (client.get("/api/search", params={"q": ""}), 400, "give a query"),
        (client.get("/api/search", params={"q": "a", "k": 0}), 400, "k must be between 1 and 100"),
        (client.get("/api/search", params={"q": "a", "k": 101}), 400, "k must be between 1 and 100"),
        (client.get("/api/search", params={"q": "a", "k": "ten"}), 400, "k:"),
        (client.get("/api/search", params={"q": "a", "offset": 10_001}), 400, "offset must be between"),
        (client.get("/api/similar", params={"id": "99999"}), 404, "no such row"),
        (client.get("/api/similar", params={"id": "0", "g": "7"}), 410, "reloaded"),
        (client.post("/api/image", content=b"\x00" * 10_000_001), 413, "limit of 10,000,000 bytes"),
        (client.post("/api/image", content=iter([b"\x00" * 4_000_000] * 3)), 413, "limit"),  # chunked, no length
        (client.post("/api/image", content=b"GIF89a not really"), 400, "not a decodable image"),
        (client.post("/api/image", content=scored["image"].read_bytes()[:200]), 400, "not a decodable image"),
        (client.post("/api/image", content=b""), 400, "empty"),
        (client.post("/api/image", files={"file": ("a.png", scored["image"].read_bytes())}), 415, "request body"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (message, response.status_code, response.text)
        assert message in response.json()["error"], response.json()
    assert client.get("/api/search", params={"q": "a red circle"}).status_code == 200


def test_the_limits_block_of_the_config_sets_the_limits_the_routes_enforce(server, scored):
    """``limits.max_k=5`` (and the others) reach the routes and /api/meta; the flat keys of before are unknown."""
    cfg = load_config(serve.ServeConfig, None, [f"embeddings={scored['embeddings']}", "limits.max_k=5",
                                                 "limits.max_query_chars=8"])
    client = TestClient(create_app(dataclasses.replace(server, limits=cfg.limits)), base_url="http://127.0.0.1")
    assert client.get("/api/meta").json()["limits"]["max_k"] == 5
    assert len(client.get("/api/search", params={"q": "a circle", "k": 5}).json()["results"]) == 5
    assert "k must be between 1 and 5" in client.get("/api/search", params={"q": "a circle", "k": 6}).json()["error"]
    assert "at most 8" in client.get("/api/search", params={"q": "a red circle", "k": 5}).json()["error"]
    with pytest.raises(ConfigError, match="unknown key 'max_k'"):
        load_config(serve.ServeConfig, None, ["max_k=5"])
    with pytest.raises(ConfigError, match="limits.max_offset must be >= 0"):
        load_config(serve.ServeConfig, None, ["limits.max_offset=-1"])


def test_every_answer_carries_the_content_security_policy(client):
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert "default-src 'none'" in policy and f'<script nonce="{nonce}">' in page.text
    assert "http:" not in page.text and "https:" not in page.text  # nothing to fetch from anywhere else
    assert "default-src 'none'" in client.get("/api/meta").headers["content-security-policy"]
    assert client.get("/api/meta").headers["x-content-type-options"] == "nosniff"


# -- reloading ---------------------------------------------------------------------------------------------------------
def test_a_rewritten_file_is_reloaded_whole_and_a_half_written_one_never_served(scored, server, tmp_path):
    embeddings, scores = tmp_path / "lib.embeddings.parquet", tmp_path / "lib.parquet"
    embeddings.write_bytes(scored["embeddings"].read_bytes())
    scores.write_bytes(scored["out"].read_bytes())
    library = Library(embeddings, scores)
    client = TestClient(create_app(dataclasses.replace(server, library=library)), base_url="http://127.0.0.1")
    before = client.get("/api/search", params={"q": "a purple circle", "k": 12}).json()
    assert name_of(before["results"][0]) == "purple.mp4" and before["generation"] == 1

    table = pq.read_table(embeddings)  # a new score run: the purple clip's rows gone, the file replaced by rename
    keep = [not p.endswith("purple.mp4") for p in table.column("path").to_pylist()]
    atomic_write_table(table.filter(pa.array(keep)), embeddings)
    assert library.check()
    after = client.get("/api/search", params={"q": "a purple circle", "k": 12}).json()
    assert after["generation"] == 2 and after["total"] == 10
    assert "purple.mp4" not in {name_of(h) for h in after["results"]}
    assert client.get(before["results"][0]["video_url"]).status_code == 410  # an id from before the reload

    content = embeddings.read_bytes()  # something writes in place and is caught half way
    embeddings.write_bytes(content[: len(content) // 2])
    assert not library.check()
    meta = client.get("/api/meta").json()
    assert meta["generation"] == 2 and meta["rows"] == 10 and meta["reload_error"]
    assert client.get("/api/search", params={"q": "a purple circle", "k": 12}).json()["total"] == 10
    embeddings.write_bytes(content)  # finished: the same rows as before, nothing to swap
    assert not library.check() and library.reload_error is None and library.current.generation == 2


# -- the command: warning, token from the environment, Ctrl-C ----------------------------------------------------------
def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a container's init may be slow to reap the dead)."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_the_command_warns_off_loopback_needs_its_token_and_stops_cleanly_on_ctrl_c(scored):
    env = {**os.environ, "PYTHONPATH": str(REPO), "COCA_VIDEO_TOKEN": "from-env"}
    cmd = [sys.executable, "-m", "coca_video.cli", "serve", str(scored["embeddings"]), "--scores", str(scored["out"]),
           "--host", "0.0.0.0", "--port", "0"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any("Ctrl-C stops" in line for line in lines):
            line = proc.stderr.readline()
            assert line, f"serve exited early: {''.join(lines)}"
            lines.append(line)
        assert any("warning: listening on 0.0.0.0" in line for line in lines)
        port = int(lines[-1].split("0.0.0.0:")[1].split("/")[0])
        assert raw_get("127.0.0.1", port, "/api/meta")[0] == 401
        auth = {"Authorization": "Bearer from-env"}
        status, body = raw_get("127.0.0.1", port, "/api/search?q=a+red+circle&k=3", auth)
        assert status == 200 and len(json.loads(body)["results"]) == 3
        assert raw_get("127.0.0.1", port, "/thumbnail/0", auth)[0] == 200  # starts the decoding helper
        helpers = children_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and json.loads(out)["stopped"]
    for _ in range(200):  # the decoding helper is killed with its parent; at the lowest priority it may take a while
        if not [pid for pid in helpers if alive(pid)]:
            break
        time.sleep(0.1)
    assert helpers and not [pid for pid in helpers if alive(pid)]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from coca_video.cli import main

    assert main(["serve", str(tmp_path / "missing.embeddings.parquet")]) == 2
    assert "missing.embeddings.parquet: embeddings file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.embeddings.parquet"
    bad.write_text("not parquet")
    assert main(["serve", str(bad)]) == 2
    assert "bad.embeddings.parquet" in capsys.readouterr().err
    with serve.bind("127.0.0.1", 0) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", str(bad), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", str(bad), "--host", "no-such-host.invalid", "--port", "0"]) == 2
    assert "cannot listen on no-such-host.invalid:0" in capsys.readouterr().err


# -- the page in a real browser ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(live):
    from probes import chrome_driver, skip_unless_works

    skip_unless_works("chromium", "chromedriver")
    driver = chrome_driver()
    yield driver
    driver.quit()


def shoot(driver, name: str) -> None:
    folder = os.environ.get("COCA_VIDEO_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def wait_for(driver, script: str, timeout: float = 30):
    """The value of ``script`` once it is truthy (polled; fails after ``timeout`` seconds)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(script))


CARD_NAMES = "return [...document.querySelectorAll('.card .name')].map(n => n.textContent)"
FIRST_ID = "const c = document.querySelector('.card'); return c && c.dataset.id"


def test_the_page_searches_plays_finds_similar_and_images_and_loads_nothing_from_outside(browser, live, client,
                                                                                          scored):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    host, port = live
    origin = f"http://{host}:{port}"
    browser.get(origin + "/")
    wait_for(browser, "return document.getElementById('status').textContent.includes('rows')")
    box = browser.find_element(By.ID, "q")
    box.send_keys("a purple circle", Keys.ENTER)
    wait_for(browser, "return document.querySelectorAll('.card').length === 12")
    api = client.get("/api/search", params={"q": "a purple circle", "k": 20}).json()["results"]
    assert browser.execute_script(CARD_NAMES)[0] == "purple.mp4"
    assert [int(i) for i in browser.execute_script(
        "return [...document.querySelectorAll('.card')].map(c => c.dataset.id)")] == [h["id"] for h in api]
    assert "q=a+purple+circle" in browser.current_url  # bookmarkable
    wait_for(browser, "return [...document.querySelectorAll('.card img')].every(i => i.complete)")
    shoot(browser, "1-search")

    second_half = next(h for h in api if name_of(h) == "purple.mp4" and h["start"] == 2.0)
    browser.find_element(By.CSS_SELECTOR, f".card[data-id='{second_half['id']}'] .name").click()
    played = wait_for(browser, "const v = document.getElementById('video'); "
                      "return !v.paused && v.currentTime > 2.05 && [v.currentTime, v.readyState]")
    assert 2.0 < played[0] < 4.0 and played[1] >= 2  # playing from the segment's start, inside it
    shoot(browser, "2-playing")

    browser.find_element(By.CSS_SELECTOR, ".card .more").click()
    wait_for(browser, "return document.getElementById('status').textContent.startsWith('more like')")
    similar = client.get("/api/similar", params={"id": api[0]["id"], "k": 20}).json()["results"]
    assert browser.execute_script(CARD_NAMES) == [name_of(h) for h in similar]
    assert "purple.mp4" not in browser.execute_script(CARD_NAMES)
    shoot(browser, "3-more-like-this")

    browser.execute_script("document.getElementById('imagefile').classList.remove('hidden')")
    browser.find_element(By.ID, "imagefile").send_keys(str(scored["image"]))
    browser.execute_script("document.getElementById('imagefile').classList.add('hidden')")
    wait_for(browser, "return document.getElementById('status').textContent.startsWith('image')")
    assert browser.execute_script(CARD_NAMES)[0] == "purple.mp4"
    shoot(browser, "4-image")

    box.clear()
    box.send_keys("an orange triangle", Keys.ENTER)
    wait_for(browser, "return document.getElementById('status').textContent.includes('orange triangle')")
    assert browser.execute_script(CARD_NAMES)[0] == HOSTILE  # the name shows as text...
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"], img:not(.thumb)').length") == 0
    with pytest.raises(NoAlertPresentException):  # ...and ran nothing
        browser.switch_to.alert.text
    shoot(browser, "5-hostile-name")

    browser.find_element(By.ID, "path").send_keys("gone", Keys.ENTER)
    wait_for(browser, "return document.querySelectorAll('.card').length === 2")
    browser.find_element(By.CSS_SELECTOR, ".card .name").click()
    message = wait_for(browser, "return document.getElementById('playermessage').textContent")
    assert "video file missing" in message and "gone.mp4" in message
    shoot(browser, "6-missing-file")

    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(origin + "/") for url in loaded), loaded


def test_batched_text_searches_equal_one_at_a_time_and_concurrent_callers_get_their_own(server):
    from coca_video.serve.batching import Batcher, TextSearch

    snapshot = server.library.current
    texts = ["a red circle", "a blue triangle", "a purple circle", "an orange triangle"]
    searches = [TextSearch(snapshot, texts[0], 3), TextSearch(snapshot, texts[1], 12),
                TextSearch(snapshot, texts[2], 5, snapshot.matching(path="red")), TextSearch(snapshot, texts[3], 1)]
    batched = server.searches.run_batch(searches)
    for search, (best, scores) in zip(searches, batched):
        alone = snapshot.rank(server.encoder.text(search.text), search.count, search.rows)
        assert best.tolist() == alone[0].tolist() and np.allclose(scores, alone[1], atol=1e-5)

    sizes = []
    batcher = Batcher(lambda items: sizes.append(len(items)) or [item * 2 for item in items])
    got: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, batcher(i))) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert got == {i: 2 * i for i in range(40)} and sum(sizes) == 40


def test_the_page_asks_for_the_token_once_and_then_searches_and_plays(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    for host, port in run_live(dataclasses.replace(server, token="t0k/en;x")):
        browser.get(f"http://{host}:{port}/?q=a+blue+triangle")
        wait_for(browser, "return !document.getElementById('tokenbox').classList.contains('hidden')")
        assert "needs its token" in browser.find_element(By.ID, "status").text
        browser.find_element(By.ID, "token").send_keys("t0k/en;x", Keys.ENTER)  # a cookie, sent with every request
        wait_for(browser, "return document.querySelectorAll('.card').length === 12")
        assert browser.execute_script(CARD_NAMES)[0] == "blue.mp4"
        browser.find_element(By.CSS_SELECTOR, ".card .name").click()
        wait_for(browser, "const v = document.getElementById('video'); return !v.paused && v.currentTime > 0.05")
        wait_for(browser, "const shown = [...document.querySelectorAll('.card img.thumb')]; return shown.length === 8 "
                 "&& shown.every(i => i.complete && i.naturalWidth > 0)")  # the cookie reaches images too (4: no file)
        shoot(browser, "7-after-token")

"""What this machine can really do, found by doing it: load torchcodec's FFmpeg core, start the browser (alone and
through chromedriver), run Java, the ffmpeg command, usearch, CUDA, a local Ray cluster. An import that works proves
nothing (torchcodec imports without FFmpeg and fails only when it decodes), so every optional-dependency skip in the
suite goes through one of these. Each probe runs at most once per test session and returns None when the thing
works, else the reason it does not (the skip's reason)."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium (make test installs it where it can)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")


def _ran(cmd: list[str], timeout: float = 60) -> str | None:
    """None when ``cmd`` runs and exits 0, else why not (its last line of output)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{cmd[0]} does not run ({type(err).__name__}: {err})"
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        return f"{cmd[0]} exits {done.returncode} ({last[0][:120]})"
    return None


@functools.cache
def torchcodec_problem() -> str | None:
    """torchcodec is installed and its FFmpeg core library loads (the package's own check users get)."""
    from coca_video.video.torchcodec_frames import torchcodec_problem as problem

    return problem()


@functools.cache
def chromium_problem() -> str | None:
    """Debian's chromium starts headless and renders a page."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "probe.html"
        page.write_text("<html><body><p id='x'>probe</p></body></html>")
        cmd = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile", "--dump-dom", page.as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"chromium does not start ({type(err).__name__})"
        if "probe</p>" not in done.stdout:
            return f"chromium did not render a page (exit {done.returncode})"
    return None


CHROMEDRIVER = Path("/usr/bin/chromedriver")  # Debian's chromium-driver, the same version as the browser


@functools.cache
def chromedriver_problem() -> str | None:
    """selenium is installed and Debian's chromedriver starts a headless chromium session that runs a script."""
    if not CHROMEDRIVER.exists():
        return f"{CHROMEDRIVER} is not installed (apt-get install chromium-driver)"
    try:
        from selenium.common.exceptions import WebDriverException
    except ImportError:
        return "selenium is not installed (pip install selenium: the test extra)"
    try:
        driver = chrome_driver()
    except WebDriverException as err:
        return f"chromedriver does not start chromium ({err.msg or type(err).__name__})"
    try:
        return None if driver.execute_script("return 6 * 7") == 42 else "chromium ran a script wrongly"
    finally:
        driver.quit()


def chrome_driver(width: int = 1300, height: int = 900):
    """A selenium session of Debian's headless chromium through its chromedriver (quit it when done)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument("--headless=new" if flag == "--headless" else flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@functools.cache
def java_problem() -> str | None:
    """``java -version`` runs (pycocoevalcap's PTB tokenizer and METEOR need it)."""
    if shutil.which("java") is None:
        return "java is not installed (apt-get install default-jre-headless)"
    return _ran(["java", "-version"])


@functools.cache
def ffmpeg_cli_problem() -> str | None:
    """The ffmpeg command line tool runs."""
    if shutil.which("ffmpeg") is None:
        return "the ffmpeg command line tool is not installed (apt-get install ffmpeg)"
    return _ran(["ffmpeg", "-hide_banner", "-version"])


@functools.cache
def usearch_problem() -> str | None:
    """usearch builds an index and finds a vector in it."""
    try:
        import numpy as np
        from usearch.index import Index

        index = Index(ndim=8, metric="cos", dtype="i8")
        vectors = np.eye(8, dtype=np.float32)
        index.add(np.arange(8), vectors)
        found = index.search(vectors[3], 1).keys
    except Exception as err:  # noqa: BLE001 -- not installed, or its native library does not load
        return f"usearch does not work ({type(err).__name__}: {err})"
    return None if int(found[0]) == 3 else "usearch returned a wrong neighbour"


@functools.cache
def cuda_problem() -> str | None:
    """A CUDA GPU takes a tensor and computes on it."""
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    try:
        value = (torch.ones(4, device="cuda") * 2).sum().item()
    except Exception as err:  # noqa: BLE001
        return f"CUDA does not work ({type(err).__name__}: {err})"
    return None if value == 8 else "CUDA computed a wrong sum"


RAY_PROBE = """
import ray
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
try:
    assert ray.get(ray.remote(lambda: 21 * 2).remote(), timeout=120) == 42
finally:
    ray.shutdown()
"""


@functools.cache
def ray_problem() -> str | None:
    """Ray Data is installed and a local Ray cluster starts and runs a task (in a child process, shut down after)."""
    try:
        import ray.data  # noqa: F401
    except ImportError as err:
        return f"ray[data] is not installed ({err}); pip install 'coca-video[ray]'"
    return _ran([sys.executable, "-c", RAY_PROBE], timeout=180)


PROBES = {"torchcodec": torchcodec_problem, "chromium": chromium_problem, "chromedriver": chromedriver_problem,
          "java": java_problem,
          "ffmpeg": ffmpeg_cli_problem, "usearch": usearch_problem, "cuda": cuda_problem,
          "ray": ray_problem}


def skip_unless_works(*names: str) -> None:
    """Skip the running test unless every named thing works here (``@pytest.mark.needs("chromium", ...)`` does this
    before the test starts, through conftest; the probes run only for tests that are about to run)."""
    for name in names:
        reason = PROBES[name]()
        if reason:
            pytest.skip(reason)

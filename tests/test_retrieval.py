"""Zero-shot video-text retrieval: MSR-VTT files as distributed, end to end on real mp4s against an independent
computation, failed videos excluded and reported, and the embedding cache reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from coca_video import create_model, get_tokenizer, image_transform
from coca_video.config import load_config
from coca_video.errors import DataError, OutputError
from coca_video.data.retrieval import load_caption_csv, load_msrvtt
from coca_video.data.synthetic import SyntheticVideos
from coca_video.tasks import retrieval
from coca_video.video import VideoReader, sample_indices, write_video


def test_msrvtt_full_and_1k_a_files(tmp_path):
    data = {"videos": [{"video_id": "video7010", "split": "test"}, {"video_id": "video12", "split": "train"},
                       {"video_id": "video9999", "split": "test"}],
            "sentences": [{"video_id": "video9999", "caption": "a dog runs "}, {"video_id": "video12", "caption": "x"},
                          {"video_id": "video7010", "caption": "a man sings"},
                          {"video_id": "video9999", "caption": "a puppy plays"}]}
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps(data))
    full = load_msrvtt(tmp_path / "MSRVTT_data.json", "full", tmp_path)
    assert full.videos == [str(tmp_path / "video7010.mp4"), str(tmp_path / "video9999.mp4")]
    assert full.captions == ["a dog runs", "a man sings", "a puppy plays"] and full.caption_video == [1, 0, 1]
    jsfusion = tmp_path / "MSRVTT_JSFUSION_test.csv"
    jsfusion.write_text("key,vid_key,video_id,sentence\nret0,msr9770,video9770,a person is cooking\n"
                        "ret1,msr7020,video7020,a cartoon\n")
    one_k = load_msrvtt(None, str(jsfusion), tmp_path)
    assert one_k.captions == ["a person is cooking", "a cartoon"] and one_k.caption_video == [0, 1]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_msrvtt(tmp_path / "bad.json", "full", tmp_path)


@pytest.fixture(scope="module")
def clip_set(tmp_path_factory) -> tuple[Path, Path]:
    """8 synthetic clips with 2 captions each, plus a corrupt clip and a missing one with captions of their own."""
    root = tmp_path_factory.mktemp("retrieval")
    clips = SyntheticVideos(8, size=64, num_frames=8, seed=11, split="test", p_reference=0.0)
    rows = ["video,caption"]
    for i in range(8):
        write_video(root / f"v{i}.mp4", clips[i][0], fps=8)
        scene = clips.scene(i)
        rows += [f"v{i}.mp4,{clips.caption(i)}", f"v{i}.mp4,a {scene.main.colour} {scene.main.shape}"]
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    rows += ["broken.mp4,a red circle", "gone.mp4,a blue square"]
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root, root / "captions.csv"


def independent_recall(captions_csv: Path, frames: int) -> tuple[float, float]:
    """T2V and V2T R@1 from frames decoded here, embedded one video at a time, compared directly."""
    model, tokenizer = create_model("default").eval(), get_tokenizer("default")
    transform = image_transform(model)
    dataset = load_caption_csv(captions_csv)
    good = [i for i, v in enumerate(dataset.videos) if Path(v).name.startswith("v")]
    with torch.no_grad():
        videos = []
        for i in good:
            reader = VideoReader(dataset.videos[i], short_side=transform.image_size)
            pixels = transform.frames(reader.get_frames(sample_indices(reader.num_frames, frames)))
            frame_embeddings = model.encode_image(pixels)
            videos.append(torch.nn.functional.normalize(frame_embeddings.mean(0), dim=-1))
        videos = torch.stack(videos)
        kept = [(c, good.index(v)) for c, v in zip(dataset.captions, dataset.caption_video) if v in good]
        text = model.encode_text(tokenizer([c for c, _ in kept]))
    truth = torch.tensor([v for _, v in kept])
    sim = text @ videos.T  # (captions, videos); a hit must beat every competitor strictly (ties count against)
    own = sim.gather(1, truth[:, None])[:, 0]
    others = sim.masked_fill(torch.nn.functional.one_hot(truth, len(good)).bool(), float("-inf")).amax(1)
    t2v = 100 * (own > others).float().mean().item()
    v2t_hits = []
    for v in range(len(good)):
        mine = truth == v
        v2t_hits.append(bool(sim[mine, v].max() > sim[~mine, v].max()))
    return t2v, 100 * float(np.mean(v2t_hits))


@pytest.mark.slow
def test_recall_matches_an_independent_computation_and_failures_are_excluded(clip_set, tmp_path):
    _, captions = clip_set
    out = tmp_path / "metrics.json"
    cfg = load_config(retrieval.RetrievalConfig, None, [f"source.captions={captions}", f"out={out}", "decode.num_frames=4",
                                                         "decode.workers=0", "decode.batch_size=4"])
    result = retrieval.run(cfg)
    t2v, v2t = independent_recall(captions, frames=4)
    assert result["t2v"]["R1"] == pytest.approx(t2v, abs=1e-6) and result["v2t"]["R1"] == pytest.approx(v2t, abs=1e-6)
    # at R@1 both video-to-text conventions agree (a hit beats every other caption, hence every other video's best)
    assert result["v2t_captions"]["R1"] == pytest.approx(v2t, abs=1e-6)
    protocol = result["protocol"]
    assert (protocol["videos"], protocol["captions"]) == (8, 16)
    assert (protocol["videos_in_split"], protocol["captions_in_split"]) == (10, 18)
    assert sorted(Path(p).name for p, _ in protocol["failed_videos"]) == ["broken.mp4", "gone.mp4"]
    assert json.loads(out.read_text())["t2v"]["R1"] == result["t2v"]["R1"]
    assert result["t2v"]["R1"] > 100 / 8  # the default model knows its colours and shapes


@pytest.mark.slow
def test_second_run_reuses_the_embedding_cache(clip_set, tmp_path, monkeypatch):
    root, captions = clip_set
    overrides = [f"source.captions={captions}", f"out={tmp_path / 'm.json'}", "decode.num_frames=4", "decode.workers=0",
                 "report_queries=0"]
    first = retrieval.run(load_config(retrieval.RetrievalConfig, None, overrides))

    opened = []

    class RecordingReader(VideoReader):
        def __init__(self, path, *args, **kwargs):
            opened.append(Path(path).name)
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr("coca_video.video.source.VideoReader", RecordingReader)  # what open_video opens
    second = retrieval.run(load_config(retrieval.RetrievalConfig, None, overrides))
    assert opened == ["broken.mp4"]  # only the failure is retried; every cached video is reused
    assert second["t2v"] == first["t2v"] and second["v2t"] == first["v2t"]


@pytest.mark.slow
@pytest.mark.parametrize("split", ["1k-A", "full"])
def test_synthetic_msrvtt_layout_recall_far_above_chance(tmp_path_factory, tmp_path, split):
    from coca_video.data.synthetic import write_msrvtt_format

    folder = tmp_path_factory.getbasetemp() / "msrvtt_synthetic"
    data_json, jsfusion = write_msrvtt_format(folder, num_videos=20, num_frames=8, seed=5)
    cfg = load_config(retrieval.RetrievalConfig, None, [
        f"source.videos={folder}", f"source.msrvtt_data={data_json}", f"source.msrvtt_split={jsfusion if split == '1k-A' else 'full'}",
        f"out={tmp_path / 'metrics.json'}", "decode.num_frames=8", "decode.workers=0", "report_queries=2",
        f"cache_dir={folder / 'cache'}"])
    result = retrieval.run(cfg)
    assert result["protocol"]["captions"] == (20 if split == "1k-A" else 40)
    assert result["t2v"]["R1"] >= 3 * 100 / 20 and result["v2t"]["R1"] >= 3 * 100 / 20, result
    assert (tmp_path / "metrics_report.html").is_file() and (tmp_path / "metrics_t2v_ranks.csv").is_file()


@pytest.mark.slow
def test_linspace_sampling_is_its_own_cache_and_protocol(clip_set, tmp_path):
    root, captions = clip_set
    runs = {}
    for sampling in ("eval", "linspace"):
        cfg = load_config(retrieval.RetrievalConfig, None, [f"source.captions={captions}", f"out={tmp_path / 'm.json'}",
                                                             "decode.num_frames=4", "decode.workers=0", "report_queries=0",
                                                             f"decode.sampling={sampling}"])
        runs[sampling] = (retrieval.cache_store(cfg).output, retrieval.run(cfg))
    assert runs["eval"][0] != runs["linspace"][0]
    assert runs["linspace"][1]["protocol"]["sampling"].startswith("linspace")
    assert runs["eval"][1]["protocol"]["sampling"] == "uniform segment centres"


def metrics_of(result: dict) -> dict:
    return {key: value for key, value in result.items() if key.startswith(("t2v", "v2t"))}


def retrieve(captions: Path, out: Path, *overrides: str) -> dict:
    return retrieval.run(load_config(retrieval.RetrievalConfig, None, [
        f"source.captions={captions}", f"out={out}", "decode.num_frames=4", "decode.workers=0", "report_queries=0",
        *overrides]))


@pytest.mark.slow
def test_a_rerun_after_the_model_folder_is_finetuned_again_never_reports_the_old_weights_recall(clip_set, tmp_path):
    """A checkpoint folder rewritten under the same name (a new finetuning run) is a new model: the rerun into the
    same output and cache reports what a fresh run with the new weights reports, not the old weights' recall."""
    from coca_video.model import save_pretrained, tokenizer_files

    _, captions = clip_set
    folder = tmp_path / "ft" / "model"
    save_pretrained(create_model("default"), folder, tokenizer_files("default"))
    old = retrieve(captions, tmp_path / "m.json", f"model.name={folder}")
    finetuned = create_model("default")
    with torch.no_grad():  # "finetuned again": the image encoder's weights moved a long way
        generator = torch.Generator().manual_seed(3)
        for parameter in finetuned.image_encoder.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * parameter.std().clamp(min=0.02))
    save_pretrained(finetuned, folder, tokenizer_files("default"))
    fresh = retrieve(captions, tmp_path / "fresh" / "m.json", f"model.name={folder}")
    assert metrics_of(fresh) != metrics_of(old)  # the new weights rank differently: the check below can fail
    rerun = retrieve(captions, tmp_path / "m.json", f"model.name={folder}")
    assert metrics_of(rerun) == metrics_of(fresh)


@pytest.mark.slow
def test_a_rerun_at_another_image_size_never_reports_the_old_resolutions_recall(clip_set, tmp_path):
    _, captions = clip_set
    old = retrieve(captions, tmp_path / "m.json")
    fresh = retrieve(captions, tmp_path / "fresh" / "m.json", "model.image_size=24")
    assert metrics_of(fresh) != metrics_of(old)  # the other resolution ranks differently: the check below can fail
    rerun = retrieve(captions, tmp_path / "m.json", "model.image_size=24")
    assert metrics_of(rerun) == metrics_of(fresh)


def test_empty_captions_are_dropped_counted_and_warned_about(tmp_path, capsys):
    (tmp_path / "pairs.csv").write_text("video,caption\na.mp4,a red circle\na.mp4,  \nb.mp4,\nb.mp4,a blue square\n")
    dataset = load_caption_csv(tmp_path / "pairs.csv")
    assert dataset.captions == ["a red circle", "a blue square"] and dataset.caption_video == [0, 1]
    assert dataset.empty_captions_dropped == 2
    assert "pairs.csv: 2 empty captions dropped" in capsys.readouterr().err


def test_msrvtt_sentence_without_video_id_is_named(tmp_path):
    data = tmp_path / "MSRVTT_data.json"
    data.write_text(json.dumps({"videos": [], "sentences": [{"video_id": "video7010", "caption": "x"},
                                                            {"caption": "no id"}]}))
    with pytest.raises(DataError, match=r"MSRVTT_data.json: sentence #1 needs string 'video_id'"):
        load_msrvtt(data, "full", tmp_path)


def test_outputs_never_overwrite_an_input_or_a_foreign_file(tmp_path):
    (tmp_path / "pairs.csv").write_text("video,caption\na.mp4,a red circle\n")
    precious = tmp_path / "notes.json"
    precious.write_text('{"mine": true}')
    for out, culprit in ((precious, "file exists and was not written by coca-video"),
                         (tmp_path / "pairs_t2v_ranks.json", None)):
        overrides = [f"source.captions={tmp_path / 'pairs.csv'}", f"out={out}"]
        if culprit is None:  # the ranks CSV beside out=X.json is X_t2v_ranks.csv: make it the caption file
            overrides = [f"source.captions={tmp_path / 'pairs_t2v_ranks.csv'}", f"out={tmp_path / 'pairs.json'}"]
            (tmp_path / "pairs_t2v_ranks.csv").write_text("video,caption\na.mp4,a red circle\n")
            culprit = "is one of the input files"
        with pytest.raises(OutputError, match=culprit):
            retrieval.run(load_config(retrieval.RetrievalConfig, None, overrides))
    assert precious.read_text() == '{"mine": true}'

"""The open_clip-shaped conveniences, each checked against the same computation done by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import coca_video
from coca_video.data.labels import read_templates, video_templates
from coca_video.data.synthetic import SyntheticVideos
from coca_video.transforms import RandomResizedCrop
from coca_video.video import VideoReader, sample_indices, write_video


@pytest.fixture(scope="module")
def default_model() -> coca_video.CoCa:
    return coca_video.create_model("default")


def test_create_model_and_transforms_has_open_clips_shape_and_casts_for_precision(default_model):
    model, preprocess_train, preprocess_val = coca_video.create_model_and_transforms("default", precision="bf16")
    assert not model.training and {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.equal(model.logit_scale, default_model.logit_scale.to(torch.bfloat16))
    assert isinstance(preprocess_train, RandomResizedCrop)
    image = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    assert torch.equal(preprocess_val(image), coca_video.image_transform(default_model)(image))
    with pytest.raises(ValueError, match="precision"):
        coca_video.create_model_and_transforms("default", precision="fp8")


@pytest.mark.parametrize("open_clip_kwargs, ours", [
    ({"generation_type": "beam_search", "seq_len": 8}, {"method": "beam", "max_len": 8}),
    ({"generation_type": "top_k", "top_k": 1, "seq_len": 10, "min_seq_len": 3},
     {"method": "greedy", "max_len": 10, "min_len": 3}),
    ({"generation_type": "top_p", "top_p": 0.5, "temperature": 0.7, "seq_len": 8},
     {"method": "top_p", "top_p": 0.5, "temperature": 0.7, "max_len": 8}),
])
@pytest.mark.slow
def test_generate_takes_open_clips_keywords(default_model, open_clip_kwargs, ours):
    size = default_model.cfg.vision.image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    theirs = default_model.generate(images, generator=torch.Generator().manual_seed(1), **open_clip_kwargs)
    expected = default_model.generate(images, generator=torch.Generator().manual_seed(1), **ours)
    assert torch.equal(theirs, expected)
    assert theirs.shape[1] <= ours.get("max_len", 30)


def test_generate_refuses_what_it_cannot_do(tiny_model):
    images = torch.zeros(1, 3, tiny_model.cfg.vision.image_size, tiny_model.cfg.vision.image_size)
    with pytest.raises(ValueError, match="top_k=1"):
        tiny_model.generate(images, generation_type="top_k", top_k=5)
    with pytest.raises(ValueError, match="generation_type"):
        tiny_model.generate(images, generation_type="contrastive")


@pytest.mark.parametrize("as_tensor", [False, True])
def test_image_transform_takes_a_uint8_clip(default_model, as_tensor):
    clip = np.random.default_rng(1).integers(0, 256, (3, 40, 70, 3), dtype=np.uint8)
    preprocess = coca_video.image_transform(default_model)
    out = preprocess(torch.from_numpy(clip) if as_tensor else clip)
    size = default_model.cfg.vision.image_size
    assert out.shape == (3, 3, size, size)
    assert torch.equal(out, torch.stack([preprocess(frame) for frame in clip]))


def test_encode_video_file_equals_decoding_transform_and_encode_by_hand(default_model, tmp_path):
    frames = SyntheticVideos(1, size=64, num_frames=10, seed=2, split="test", p_reference=0.0)[0][0]
    path = write_video(tmp_path / "clip.mp4", frames, fps=5)
    got = coca_video.encode_video_file(default_model, path, num_frames=4, pooling="attentional")
    reader = VideoReader(path)
    decoded = reader.get_frames(sample_indices(reader.num_frames, 4))
    pixels = coca_video.image_transform(default_model).frames(decoded)
    with torch.no_grad():
        expected = default_model.encode_video(pixels[None], pooling="attentional")
    assert got.video_embedding.shape == (1, default_model.cfg.embed_dim) and got.frame_embeddings.shape[1] == 4
    for ours, theirs in zip(got, expected):
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_zero_shot_classify_is_a_softmax_over_prompt_ensembles(default_model):
    tokenizer = coca_video.get_tokenizer("default")
    videos = F.normalize(torch.randn(3, default_model.cfg.embed_dim, generator=torch.Generator().manual_seed(3)),
                         dim=-1)
    names, templates = ["red", "blue circle", "green"], ["a {}.", "a video of a {} shape."]
    with torch.no_grad():
        classes = torch.stack([F.normalize(torch.stack(
            [F.normalize(default_model.encode_text(tokenizer([t.format(n)]))[0], dim=-1) for t in templates]
        ).mean(0), dim=-1) for n in names])
        expected = torch.softmax(default_model.logit_scale.exp().clamp(max=100) * videos @ classes.T, dim=-1)
    probabilities = coca_video.zero_shot_classify(default_model, tokenizer, videos, names, templates)
    assert probabilities.shape == (3, 3) and torch.allclose(probabilities, expected, atol=1e-5)
    default = coca_video.zero_shot_classify(default_model, tokenizer, videos, names)  # the model's own prompts,
    own = read_templates(default_model.checkpoint / "prompt_templates.txt")  # as every command takes them
    assert own != video_templates() and torch.allclose(
        default, coca_video.zero_shot_classify(default_model, tokenizer, videos, names, own))


def test_the_api_and_score_label_a_video_with_the_same_prompts(default_model, tmp_path):
    """The same video embedding gets the same top labels and scores from ``zero_shot_classify`` (no templates
    given) as from ``coca-video score --labels`` with the same model: one prompt rule (the model's own prompts)."""
    import pandas as pd

    from coca_video.cli import main
    from coca_video.data.synthetic import COLOURS, SHAPES
    from coca_video.tasks.demo import write_demo_videos

    write_demo_videos(tmp_path / "videos", 3)
    names = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    out = tmp_path / "scores.parquet"
    assert main(["score", str(tmp_path / "videos"), "--labels", str(tmp_path / "labels.txt"), "--out", str(out),
                 "decode.num_frames=4", "decode.workers=0", "top_k=3"]) == 0
    scores = pd.read_parquet(out).query("status == 'ok'").sort_values("path")
    embeddings = pd.read_parquet(tmp_path / "scores.embeddings.parquet").set_index("path").loc[scores["path"]]
    videos = torch.tensor(np.stack(embeddings["video_embedding"].to_numpy()))
    top = coca_video.zero_shot_classify(default_model, coca_video.get_tokenizer("default"), videos, names).topk(3)
    assert len(scores) == 3
    assert [[names[i] for i in row] for row in top.indices.tolist()] == \
        scores[["top1_label", "top2_label", "top3_label"]].values.tolist()
    assert np.allclose(top.values.numpy(), scores[["top1_score", "top2_score", "top3_score"]].to_numpy(), atol=1e-5)

"""Time in the multimodal path (model/frame_time.py): a temporal embedding that starts at zero leaves a model's
captions and caption logits exactly as they were; once it is not zero, the order of the frames changes what the
generative pooler sees; it resamples to another frame count; and a saved model folder brings it back. The same for
the spatial embedding and the order of the tokens within a frame; its motion table (a place's vector scaled by when
in the clip the frame is) makes the order of the frames visible on its own, and a folder saved before that table
existed loads as it was."""

from __future__ import annotations

import torch
from einops import rearrange
from helpers import tiny_config
from safetensors.torch import load_file, save_file

import coca_video
from coca_video.model.frame_time import FrameSpace, add_frame_embedding, resample_frames

T = 4


def clip_tokens(model: coca_video.CoCa, seed: int = 0) -> torch.Tensor:
    """(2, T*N, C) encoder tokens of two random clips of T frames."""
    gen = torch.Generator().manual_seed(seed)
    size = model.cfg.vision.image_size
    frames = torch.randn(2, T, 3, size, size, generator=gen)
    return model.encode_video(frames).tokens


def reversed_frames(tokens: torch.Tensor) -> torch.Tensor:
    return rearrange(rearrange(tokens, "b (t n) c -> b t n c", t=T).flip(1), "b t n c -> b (t n) c")


def test_a_zero_temporal_embedding_leaves_captions_and_logits_unchanged():
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config()).eval()
    tokens = clip_tokens(model)
    text = torch.randint(1, 100, (2, 6))
    before_logits = model.teacher_forced_caption_logits(tokens, text)
    before_ids = model.generate_from_tokens(tokens, method="greedy", max_len=8)
    model.add_frame_time(T)
    assert model.cfg.temporal_frames == T
    assert torch.equal(model.teacher_forced_caption_logits(tokens, text, num_frames=T), before_logits)
    assert torch.equal(model.generate_from_tokens(tokens, method="greedy", max_len=8, num_frames=T), before_ids)


def test_without_time_the_frame_order_is_invisible_and_with_it_it_is_not():
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config()).eval()
    tokens = clip_tokens(model)
    flipped = reversed_frames(tokens)
    text = torch.randint(1, 100, (2, 6))
    same = model.teacher_forced_caption_logits(flipped, text, num_frames=T)
    torch.testing.assert_close(same, model.teacher_forced_caption_logits(tokens, text, num_frames=T))  # a set
    with torch.no_grad():
        model.add_frame_time(T).embedding.normal_()
    ordered = model.teacher_forced_caption_logits(tokens, text, num_frames=T)
    assert (ordered - model.teacher_forced_caption_logits(flipped, text, num_frames=T)).abs().max() > 1e-3


def test_the_table_resamples_linearly_to_another_frame_count():
    table = torch.tensor([[0.0], [1.0]])  # two frames: 0 then 1
    # four frames at centres 1/8, 3/8, 5/8, 7/8 of the clip; the table's at 1/4 and 3/4 (edges clamp)
    assert torch.allclose(resample_frames(table, 4)[:, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert resample_frames(table, 2) is table
    tokens = torch.zeros(1, 4 * 3, 1)  # 4 frames of 3 tokens
    moved = add_frame_embedding(tokens, table, 4)
    assert moved[0, :, 0].tolist() == [0.0] * 3 + [0.25] * 3 + [0.75] * 3 + [1.0] * 3


def test_a_saved_model_folder_brings_its_temporal_embedding_back(tmp_path):
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config()).eval()
    with torch.no_grad():
        model.add_frame_time(T).embedding.normal_()
    folder = coca_video.save_pretrained(model, tmp_path / "timed")
    loaded = coca_video.create_model(str(folder)).eval()
    assert loaded.cfg.temporal_frames == T
    assert torch.equal(loaded.frame_time.embedding, model.frame_time.embedding)
    tokens = clip_tokens(model)
    assert torch.equal(loaded.generate_from_tokens(tokens, method="greedy", max_len=8, num_frames=T),
                       model.generate_from_tokens(tokens, method="greedy", max_len=8, num_frames=T))


def shuffled_within_frames(tokens: torch.Tensor) -> torch.Tensor:
    """The same tokens, each frame's put in another order (the same permutation in every frame)."""
    frames = rearrange(tokens, "b (t n) c -> b t n c", t=T)
    order = torch.randperm(frames.shape[2], generator=torch.Generator().manual_seed(1))
    return rearrange(frames[:, :, order], "b t n c -> b (t n) c")


def test_a_spatial_embedding_starts_invisible_then_tells_places_apart_and_is_saved(tmp_path):
    """The pooler reads a set: where a token sat in its frame is invisible to it until the spatial table (zero at
    the start: captions and logits unchanged) is not zero; a saved folder brings the table back."""
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config()).eval()
    tokens = clip_tokens(model)
    moved = shuffled_within_frames(tokens)
    text = torch.randint(1, 100, (2, 6))
    before = model.teacher_forced_caption_logits(tokens, text, num_frames=T)
    torch.testing.assert_close(model.teacher_forced_caption_logits(moved, text, num_frames=T), before)
    table = model.add_frame_space()
    assert model.cfg.spatial_tokens == model.image_encoder.num_tokens == table.embedding.shape[0]
    assert torch.equal(model.teacher_forced_caption_logits(tokens, text, num_frames=T), before)
    with torch.no_grad():
        table.embedding.normal_()
    placed = model.teacher_forced_caption_logits(tokens, text, num_frames=T)
    assert (placed - model.teacher_forced_caption_logits(moved, text, num_frames=T)).abs().max() > 1e-3
    loaded = coca_video.create_model(str(coca_video.save_pretrained(model, tmp_path / "placed"))).eval()
    assert loaded.cfg.spatial_tokens == model.cfg.spatial_tokens
    torch.testing.assert_close(loaded.teacher_forced_caption_logits(tokens, text, num_frames=T), placed)


def test_the_motion_table_moves_each_place_by_when_its_frame_is():
    """By hand: 4 frames at -0.75, -0.25, 0.25, 0.75 of the clip's span; place n of frame t moves by
    embedding[n] + ramp(t) * motion[n]."""
    space = FrameSpace(2, 1)
    with torch.no_grad():
        space.embedding.copy_(torch.tensor([[1.0], [0.0]]))
        space.motion.copy_(torch.tensor([[0.0], [4.0]]))
    moved = space(torch.zeros(1, 4 * 2, 1), 4)[0, :, 0]
    assert moved.tolist() == [1.0, -3.0, 1.0, -1.0, 1.0, 1.0, 1.0, 3.0]


def test_the_motion_table_alone_makes_the_frame_order_visible():
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config()).eval()
    tokens, text = clip_tokens(model), torch.randint(1, 100, (2, 6))
    space = model.add_frame_space()
    with torch.no_grad():
        space.embedding.normal_()  # places alone: still a set of frames
    placed = model.teacher_forced_caption_logits(tokens, text, num_frames=T)
    torch.testing.assert_close(model.teacher_forced_caption_logits(reversed_frames(tokens), text, num_frames=T), placed)
    with torch.no_grad():
        space.motion.normal_()
    ordered = model.teacher_forced_caption_logits(tokens, text, num_frames=T)
    flipped = model.teacher_forced_caption_logits(reversed_frames(tokens), text, num_frames=T)
    assert (ordered - flipped).abs().max() > 1e-3


def test_a_folder_saved_before_the_motion_table_loads_as_it_was(tmp_path):
    """A folder whose weights hold ``frame_space.embedding`` without ``frame_space.motion`` (saved before it existed)
    loads with a zero motion table: the captions' logits of the model it was saved from."""
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config()).eval()
    with torch.no_grad():
        model.add_frame_space().embedding.normal_()
    folder = coca_video.save_pretrained(model, tmp_path / "old")
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if k != "frame_space.motion"}, str(folder / "model.safetensors"))
    loaded = coca_video.create_model(str(folder)).eval()
    tokens, text = clip_tokens(model), torch.randint(1, 100, (2, 6))
    torch.testing.assert_close(loaded.teacher_forced_caption_logits(tokens, text, num_frames=T),
                               model.teacher_forced_caption_logits(tokens, text, num_frames=T), rtol=0, atol=0)

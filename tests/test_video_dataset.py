"""Video lists as a Dataset: batched preprocessing equals the image path, errors ride in the batch, worker count
never changes what is sampled, and multi-view sampling follows the hand-worked layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import STEP, index_frames
from PIL import Image

from coca_video import get_model_config, image_transform
from coca_video.data.video import ClipSampling, VideoClipDataset, VideoItem, find_videos, video_loader
from coca_video.video import write_video


def test_batched_frame_preprocessing_equals_the_image_path_and_open_clip():
    import open_clip

    transform = image_transform(get_model_config("coca_ViT-B-32"))
    _, _, reference = open_clip.create_model_and_transforms("coca_ViT-B-32", pretrained=None)
    frames = np.random.default_rng(0).integers(0, 255, (3, 360, 640, 3), dtype=np.uint8)
    batched = transform.frames(frames)
    for frame, ours in zip(frames, batched):
        torch.testing.assert_close(transform(Image.fromarray(frame)), ours, atol=0, rtol=0)
        theirs = reference(Image.fromarray(frame))
        assert (theirs - ours).abs().mean() < 1e-3  # tensor vs PIL bicubic: at most one uint8 level on a few pixels
        assert (theirs - ours).abs().max() <= 1 / 255 / 0.2613 + 1e-4


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    for i in range(5):
        write_video(root / f"v{i}.mp4", index_frames(40), fps=25)
    (root / "bad.mp4").write_bytes(b"junk")
    return root


def dataset(folder: Path, mode: str = "eval", **sampling) -> VideoClipDataset:
    items = [VideoItem(str(p), label=i) for i, p in enumerate(sorted(folder.glob("*.mp4")))]
    transform = image_transform(get_model_config("tiny"))
    return VideoClipDataset(items, transform, ClipSampling(mode=mode, **sampling), seed=3)


def grey_index(clip: torch.Tensor) -> list[int]:
    """Frame index back from uint8 pixels (T, 3, S, S) (frames are flat grey STEP * index)."""
    assert clip.dtype == torch.uint8  # workers hand over pixels, not normalised floats
    return [int(round(p.float().mean().item() / STEP)) for p in clip]


def old_worker_normalisation(frames: np.ndarray, transform, num_crops: int) -> torch.Tensor:
    """What workers computed before they handed over uint8: resize, crop(s), then (x / 255 - mean) / std in float32,
    written out here independently of ``ImageTransform``."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    chw = torch.as_tensor(frames).permute(0, 3, 1, 2)
    size = transform.image_size
    resized = TF.resize(chw, [size], interpolation=InterpolationMode(transform.interpolation), antialias=True)
    height, width = resized.shape[-2:]
    if num_crops == 1:
        crops = [TF.center_crop(resized, [size, size])]
    else:  # 3 crops along the longer side (here the width): start, centre, end
        top = (height - size) // 2
        crops = [resized[..., top:top + size, left:left + size] for left in (0, (width - size) // 2, width - size)]
    mean, std = torch.tensor(transform.mean.flatten().tolist()), torch.tensor(transform.std.flatten().tolist())
    return torch.stack([(c.float() / 255.0 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1) for c in crops])


@pytest.mark.parametrize("num_crops", [1, 3])
def test_uint8_crops_normalised_in_the_main_process_equal_the_old_float_worker_output(num_crops):
    transform = image_transform(get_model_config("coca_ViT-B-32"))
    frames = np.random.default_rng(1).integers(0, 255, (4, 240, 320, 3), dtype=np.uint8)
    crops = transform.crops(frames, num_crops)
    assert crops.dtype == torch.uint8 and crops.shape == (num_crops, 4, 3, 224, 224)
    ours = transform.normalise(crops)
    torch.testing.assert_close(ours, old_worker_normalisation(frames, transform, num_crops), atol=1e-6, rtol=0)
    bf16 = transform.normalise(crops, dtype=torch.bfloat16)  # bf16 weights: the same floats, rounded once
    assert bf16.dtype == torch.bfloat16 and torch.equal(bf16, ours.to(torch.bfloat16))


def test_a_bad_file_rides_in_the_batch_as_an_error(folder):
    data = dataset(folder, num_frames=4)
    batches = list(video_loader(data, batch_size=3, workers=2))
    errors = [e for b in batches for e in b.errors]
    assert len(errors) == 1 and errors[0][1].endswith("bad.mp4") and "bad.mp4" in errors[0][2]
    good = [p for b in batches for p in b.paths]
    assert len(good) == 5 and all(b.frames.shape[1:3] == (1, 4) for b in batches if b.frames is not None)
    first = next(b for b in batches if b.frames is not None)
    assert grey_index(first.frames[0, 0]) == [5, 15, 25, 35]  # TSN centres of 40 frames
    assert first.meta[first.indices[0]]["num_frames"] == 40


def test_training_samples_do_not_depend_on_the_worker_count(folder):
    data = dataset(folder, mode="train", num_frames=4)
    by_workers = [torch.cat([b.frames for b in video_loader(data, 2, workers=w) if b.frames is not None])
                  for w in (0, 2)]
    torch.testing.assert_close(by_workers[0], by_workers[1], atol=0, rtol=0)
    for clip in by_workers[0][:, 0]:
        assert all(10 * k <= i < 10 * (k + 1) for k, i in enumerate(grey_index(clip)))


def test_multi_view_layout(folder):
    data = dataset(folder, num_frames=2, temporal_views=2, spatial_crops=3)
    record = data[1]  # data[0] is bad.mp4
    assert record["frames"].shape == (6, 2, 3, 64, 64)  # views x crops, frames, C, S, S
    # view v shifts the segment points by (v + 0.5) / views of a segment: segments of 20 frames -> 5,25 and 15,35
    assert grey_index(record["frames"][0]) == [5, 25]
    assert grey_index(record["frames"][3]) == [15, 35]


def test_find_videos_recursive_case_insensitive_hidden_skipped_links_once(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.mp4", "a/b/two.MKV", "a/.hidden.mp4", "a/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "three.mp4").write_bytes(b"x")
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a")
    found = [p.relative_to(tmp_path).as_posix() for p in find_videos(tmp_path)]
    assert found == ["a/b/two.MKV", "a/one.mp4"]

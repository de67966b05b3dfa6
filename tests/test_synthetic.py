"""The synthetic world is deterministic, its captions describe what is drawn, and its labels are balanced."""

from pathlib import Path

import numpy as np

from coca_video.data.synthetic import (COLOURS, MOTIONS, SHAPES, SyntheticImageText, SyntheticVideos, label_names,
                                       zero_shot_image_set)


def pixels_of(image: np.ndarray, colour: str) -> np.ndarray:
    """(y, x) of pixels painted exactly in a named colour."""
    return np.argwhere((image == np.array(COLOURS[colour], np.uint8)).all(-1))


def test_same_seed_same_data_other_split_other_data():
    a, b = SyntheticImageText(8, size=32, seed=1), SyntheticImageText(8, size=32, seed=1)
    for i in range(8):
        np.testing.assert_array_equal(a[i][0], b[i][0])
        assert a[i][1] == b[i][1] == a.caption(i)
    held_out = SyntheticImageText(8, size=32, seed=1, split="test")
    assert [held_out.caption(i) for i in range(8)] != [a.caption(i) for i in range(8)]


def test_captions_name_what_is_drawn_where():
    pairs = SyntheticImageText(200, size=64, seed=0)
    for i in range(200):
        image, caption = pairs[i]
        scene = pairs.scene(i)
        assert caption.startswith(f"a {scene.main.size} {scene.main.colour} {scene.main.shape}")
        main = pixels_of(image, scene.main.colour)
        assert len(main) > 20
        if scene.reference is not None:
            other = pixels_of(image, scene.reference.colour)
            (my, mx), (oy, ox) = main.mean(0), other.mean(0)
            axis, sign = {"above": (0, -1), "below": (0, 1), "left of": (1, -1), "right of": (1, 1)}[scene.relation]
            assert sign * ((my, mx)[axis] - (oy, ox)[axis]) > 10, caption


def test_video_motion_labels_match_the_movement():
    clips = SyntheticVideos(20, size=64, num_frames=8, seed=0, p_reference=0.0)
    assert label_names("motion")[0] == "moving left" and len(label_names("motion")) == len(MOTIONS)
    for i in range(20):
        frames, caption, label = clips[i]
        assert frames.shape == (8, 64, 64, 3) and label == i % len(MOTIONS)
        colour = clips.scene(i).main.colour
        start, end = pixels_of(frames[0], colour).mean(0), pixels_of(frames[-1], colour).mean(0)
        dy, dx = end - start
        expected = {"moving left": (0, -1), "moving right": (0, 1), "moving up": (-1, 0), "moving down": (1, 0),
                    "staying still": (0, 0)}[label_names("motion")[label]]
        assert np.allclose((dy, dx), np.array(expected) * 0.45 * 64, atol=3), caption
        assert label_names("motion")[label] in caption


def test_zero_shot_set_is_single_object_and_covers_every_class():
    images, labels, names = zero_shot_image_set(120, 32, attribute="shape")
    assert names == list(SHAPES) and images.shape == (120, 32, 32, 3)
    assert set(labels.tolist()) == set(range(len(SHAPES)))
    colours, colour_labels, colour_names = zero_shot_image_set(120, 32, attribute="colour")
    assert colour_names == list(COLOURS)
    for image, label in zip(colours[:20], colour_labels[:20]):
        assert len(pixels_of(image, colour_names[label])) > 5


def test_a_run_stopped_while_writing_a_clip_leaves_no_truncated_clip_for_the_next_run(tmp_path, monkeypatch):
    """The datasets keep clips already written, so a clip cut short (Ctrl-C, a full disk) must never be there:
    each is written under a temp name and renamed. The rerun writes it whole and it decodes."""
    import av
    import pytest

    import coca_video.video as video
    from coca_video.data.synthetic import write_kinetics_format

    real = video.write_video

    def cut_short(path, *args, **kwargs):
        Path(path).write_bytes(b"\x00\x00\x00\x18ftypisom")  # the first bytes of an mp4, then the process stops
        raise KeyboardInterrupt

    monkeypatch.setattr(video, "write_video", cut_short)
    with pytest.raises(KeyboardInterrupt):
        write_kinetics_format(tmp_path, 2, 1, num_frames=4)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    monkeypatch.setattr(video, "write_video", real)
    train_csv, _ = write_kinetics_format(tmp_path, 2, 1, num_frames=4)
    clips = sorted(tmp_path.rglob("*.mp4"))
    assert len(clips) == 3 and train_csv.read_text().count("\n") == 3
    for clip in clips:
        with av.open(str(clip)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 4

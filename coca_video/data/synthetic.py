"""The built-in synthetic world: images and short videos of coloured shapes, with captions and labels.

It is the project's offline world (no downloads): the default model is pretrained on its images, and the demo,
tests and video tasks use its videos (actions = kinds of motion, retrieval = scene captions). Everything is a pure
function of ``(seed, split, index)``, so position ``i`` of a dataset is the same scene in every process.

    pairs = SyntheticImageText(1000, size=64, seed=0)
    image, caption = pairs[3]          # uint8 (64, 64, 3), "a big blue triangle above a small red circle"
    clips = SyntheticVideos(100, size=64, num_frames=16, seed=0, split="test")
    frames, caption, label = clips[0]  # uint8 (16, 64, 64, 3), "a small green square moving left", 0
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from ..io import atomic_path, atomic_write_text

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 175, 60), "blue": (45, 85, 225),
    "yellow": (240, 220, 40), "purple": (150, 60, 195), "orange": (250, 140, 25),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES: dict[str, float] = {"small": 0.11, "big": 0.2}  # half-extent as a fraction of the image side
MOTIONS = ("left", "right", "up", "down", "still")
RELATIONS = ("above", "below", "left of", "right of")
SPLITS = {"train": 0, "test": 1}
TRAVEL = 0.45  # how far a moving object goes over a clip, as a fraction of the image side


@dataclass(frozen=True)
class Thing:
    """One shape: its look and its centre (x, y) in units of the image side."""

    colour: str
    shape: str
    size: str
    x: float
    y: float

    def describe(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A main object, maybe a second one (``reference``) in ``relation`` to it, a background, and a motion."""

    main: Thing
    background: tuple[int, int, int]
    texture_seed: int
    motion: str = "still"
    reference: Thing | None = None
    relation: str | None = None
    turns: str | None = None  # in a video: the colour the main object takes from the middle frame on


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return np.random.default_rng([seed, SPLITS[split], index])


def sample_scene(rng: np.random.Generator, p_reference: float, motion: str | None = None) -> Scene:
    """Draw a scene. ``motion`` None makes an image scene: a second object, if any, stands in a spatial relation
    to the main one. In a video the main object's whole path stays in frame and a second object stands anywhere
    (the main object passes in front of it)."""
    colour, shape, size = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(list(SIZES)))
    background = tuple(int(v) for v in rng.integers(25, 190) + rng.integers(-20, 21, size=3))
    texture_seed = int(rng.integers(1 << 31))
    reference = None
    if rng.random() < p_reference:
        ref_colour = str(rng.choice([c for c in COLOURS if c != colour]))
        reference = (ref_colour, str(rng.choice(SHAPES)), str(rng.choice(list(SIZES))))
    if motion is None and reference is not None:
        relation = str(rng.choice(RELATIONS))
        near, far = rng.uniform(0.22, 0.3), rng.uniform(0.7, 0.78)
        across = rng.uniform(0.3, 0.7, size=2)
        main_at, ref_at = {
            "above": ((across[0], near), (across[1], far)), "below": ((across[0], far), (across[1], near)),
            "left of": ((near, across[0]), (far, across[1])), "right of": ((far, across[0]), (near, across[1])),
        }[relation]
        return Scene(Thing(colour, shape, size, *main_at), background, texture_seed, "still",
                     Thing(*reference, *ref_at), relation)
    motion = motion or "still"
    travel = 0.0 if motion == "still" else TRAVEL
    lo, hi = SIZES[size] + 0.02, 1 - SIZES[size] - 0.02
    x = rng.uniform(lo, hi - travel * (motion in ("left", "right"))) + travel * (motion == "left")
    y = rng.uniform(lo, hi - travel * (motion in ("up", "down"))) + travel * (motion == "up")
    if reference is not None:
        ref_lo, ref_hi = SIZES[reference[2]] + 0.02, 1 - SIZES[reference[2]] - 0.02
        reference = Thing(*reference, *rng.uniform(ref_lo, ref_hi, size=2))
    return Scene(Thing(colour, shape, size, x, y), background, texture_seed, motion, reference)


def caption(scene: Scene, video: bool = False) -> str:
    """The scene in words: "a small red circle [moving left] [above a big blue square]"; a clip whose object
    changes colour: "a small red square that turns blue"."""
    words = scene.main.describe()
    if video and scene.turns is not None:
        return f"{words} that turns {scene.turns}"
    if video:
        words += " staying still" if scene.motion == "still" else f" moving {scene.motion}"
    if scene.reference is not None:
        words += f" near {scene.reference.describe()}" if video else f" {scene.relation} {scene.reference.describe()}"
    return words


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Pixels inside a shape centred at the origin with half-extent ``half`` (dx, dy in pixels)."""
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half * 0.85) & (np.abs(dy) <= half * 0.85)
    if shape == "triangle":  # pointing up
        return (dy <= half) & (dy >= -half) & (np.abs(dx) <= (dy + half) * 0.55)
    if shape == "cross":
        bar = half / 3
        return ((np.abs(dx) <= bar) & (np.abs(dy) <= half)) | ((np.abs(dy) <= bar) & (np.abs(dx) <= half))
    raise ValueError(f"unknown shape {shape!r}")


def _background(scene: Scene, size: int) -> np.ndarray:
    """A flat colour with a soft gradient and fine noise, so the model cannot key on a blank canvas."""
    rng = np.random.default_rng(scene.texture_seed)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    direction = rng.uniform(-12, 12, size=2)
    canvas = np.asarray(scene.background, np.float32) + (direction[0] * ramp[None, :] + direction[1] * ramp[:, None]
                                                        )[..., None]
    canvas += rng.normal(0, 6, size=(size, size, 1)).astype(np.float32)
    return canvas


def _draw(canvas: np.ndarray, thing: Thing, dx_shift: float = 0.0, dy_shift: float = 0.0) -> None:
    size = canvas.shape[0]
    coords = np.arange(size, dtype=np.float32) + 0.5
    dx = coords[None, :] - (thing.x + dx_shift) * size
    dy = coords[:, None] - (thing.y + dy_shift) * size
    canvas[_shape_mask(thing.shape, dx, dy, SIZES[thing.size] * size)] = COLOURS[thing.colour]


def render_image(scene: Scene, size: int) -> np.ndarray:
    """The scene as a uint8 (size, size, 3) RGB image (the main object at its start position)."""
    return render_video(scene, size, 1)[0]


def render_video(scene: Scene, size: int, num_frames: int) -> np.ndarray:
    """The scene as uint8 (num_frames, size, size, 3); the main object travels ``TRAVEL`` along its motion."""
    base = _background(scene, size)
    if scene.reference is not None:
        _draw(base, scene.reference)
    step = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}[scene.motion]
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        progress = TRAVEL * t / max(num_frames - 1, 1)
        canvas = base.copy()
        changed = scene.turns is not None and t >= num_frames // 2  # the middle frame already has the new colour
        _draw(canvas, replace(scene.main, colour=scene.turns) if changed else scene.main, step[0] * progress,
              step[1] * progress)
        frames[t] = np.clip(canvas, 0, 255)
    return frames


class SyntheticImageText:
    """``n`` (image, caption) pairs; item ``i`` is a pure function of ``(seed, split, i)``."""

    def __init__(self, n: int, size: int = 64, seed: int = 0, split: str = "train", p_reference: float = 0.5):
        self.n, self.size, self.seed, self.split, self.p_reference = n, size, seed, split, p_reference

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return sample_scene(_rng(self.seed, self.split, index), self.p_reference)

    def caption(self, index: int) -> str:
        return caption(self.scene(index))

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        scene = self.scene(index)
        return render_image(scene, self.size), caption(scene)


VideoTask = Literal["motion", "colour", "shape"]


class SyntheticVideos:
    """``n`` short clips (frames, caption, label). ``task`` picks the label: the main object's motion (the
    action-recognition task), colour or shape. Motions are balanced: clip ``i`` moves ``MOTIONS[i % 5]``."""

    def __init__(self, n: int, size: int = 64, num_frames: int = 16, seed: int = 0, split: str = "train",
                 task: VideoTask = "motion", p_reference: float = 0.5):
        if task not in ("motion", "colour", "shape"):
            raise ValueError(f"task must be motion, colour or shape, got {task!r}")
        self.n, self.size, self.num_frames, self.seed, self.split = n, size, num_frames, seed, split
        self.task, self.p_reference = task, p_reference

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.n:
            raise IndexError(index)
        rng = _rng(self.seed + 7919, self.split, index)
        return sample_scene(rng, self.p_reference, motion=MOTIONS[index % len(MOTIONS)])

    def caption(self, index: int) -> str:
        return caption(self.scene(index), video=True)

    def label(self, index: int) -> int:
        return label_names(self.task).index(_attribute(self.scene(index), self.task))

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, int]:
        scene = self.scene(index)
        return render_video(scene, self.size, self.num_frames), caption(scene, video=True), self.label(index)


def colour_change_scene(rng: np.random.Generator) -> Scene:
    """A still object that changes colour half way through the clip, to another colour; no second object."""
    scene = sample_scene(rng, p_reference=0.0, motion="still")
    return replace(scene, turns=str(rng.choice([c for c in COLOURS if c != scene.main.colour])))


class ColourChangeClips:
    """``n`` clips (frames, caption) of one still object that changes colour from the middle frame on: "a small
    red square that turns blue". Item ``i`` is a pure function of ``(seed, split, i)``."""

    def __init__(self, n: int, size: int = 64, num_frames: int = 16, seed: int = 0, split: str = "train") -> None:
        self.n, self.size, self.num_frames, self.seed, self.split = n, size, num_frames, seed, split

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return colour_change_scene(_rng(self.seed + 15485863, self.split, index))

    def caption(self, index: int) -> str:
        return caption(self.scene(index), video=True)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        scene = self.scene(index)
        return render_video(scene, self.size, self.num_frames), caption(scene, video=True)


def write_colour_change_set(folder: str | os.PathLike, num_videos: int, split: str = "train", size: int = 64,
                            num_frames: int = 16, seed: int = 0) -> Path:
    """Write :class:`ColourChangeClips` as mp4s ``{split}{i:05d}.mp4`` and ``captions.csv`` (video,caption: the
    input ``captioning --captions`` and ``finetune-captions --captions`` read). Clips already written are kept.
    Returns the CSV."""
    import csv

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clips = ColourChangeClips(num_videos, size, num_frames, seed, split)
    rows = []
    for i in range(num_videos):
        name = f"{split}{i:05d}.mp4"
        write_clip_once(folder / name, clips, i, num_frames)
        rows.append((name, clips.caption(i)))
    path = folder / "captions.csv"
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("video", "caption"), *rows])
    return path


def _attribute(scene: Scene, attribute: str) -> str:
    if attribute == "motion":
        return "staying still" if scene.motion == "still" else f"moving {scene.motion}"
    return getattr(scene.main, attribute)


def label_names(task: str) -> list[str]:
    """Class names of a task, in caption words: motions ("moving left", ...), colours or shapes."""
    if task == "motion":
        return ["staying still" if m == "still" else f"moving {m}" for m in MOTIONS]
    if task == "colour":
        return list(COLOURS)
    if task == "shape":
        return list(SHAPES)
    raise ValueError(f"unknown task {task!r}: motion, colour or shape")


def synthetic_vocabulary() -> frozenset[str]:
    """Every word the synthetic world's captions and class names use for what is in a scene: colours, shapes,
    sizes, motions and relations (the only things the built-in default model was trained to tell apart)."""
    phrases = [*COLOURS, *SHAPES, *SIZES, *RELATIONS, *(name for task in ("motion", "colour", "shape")
                                                         for name in label_names(task))]
    return frozenset(word for phrase in phrases for word in phrase.split())


def is_synthetic_class(name: str) -> bool:
    """Whether a class name is made only of the synthetic world's words (``red``, ``small blue circle``,
    ``moving left``), ignoring case and reading ``_`` as a space."""
    words = name.lower().replace("_", " ").split()
    return bool(words) and all(word in synthetic_vocabulary() for word in words)


def zero_shot_image_set(num: int, size: int, seed: int = 0, attribute: str = "colour"
                        ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Held-out single-object test images (the ``test`` split) labelled by ``attribute`` (colour or shape):
    uint8 (num, size, size, 3), int labels (num,), class names."""
    names = label_names(attribute)
    images, labels = np.empty((num, size, size, 3), np.uint8), np.empty(num, np.int64)
    for i in range(num):
        scene = sample_scene(_rng(seed + 104729, "test", i), p_reference=0.0)
        images[i], labels[i] = render_image(scene, size), names.index(getattr(scene.main, attribute))
    return images, labels, names


def write_clip_once(path: Path, clips: SyntheticVideos | ColourChangeClips, index: int, num_frames: int) -> None:
    """Clip ``index`` as an mp4 at ``path`` unless it is there: written to a temp name and renamed, so a run
    stopped mid-write leaves no truncated clip for the next run to keep."""
    from ..video import write_video

    if path.exists():
        return
    with atomic_path(path) as tmp:
        write_video(tmp, clips[index][0], fps=max(num_frames / 2, 1), container_format=path.suffix[1:])


def write_kinetics_format(folder: str | os.PathLike, train_videos: int, val_videos: int, task: VideoTask = "motion",
                          size: int = 64, num_frames: int = 16, seed: int = 0) -> tuple[Path, Path]:
    """Write a Kinetics-layout action dataset from the synthetic world: real mp4 clips named
    ``{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`` in per-class folders, and the official CSV columns
    (``label,youtube_id,time_start,time_end,split``). Returns (train.csv, validate.csv); files already written
    are kept, so a second call costs nothing."""
    folder = Path(folder)
    paths = []
    for split, count, world_split in (("train", train_videos, "train"), ("validate", val_videos, "test")):
        clips = SyntheticVideos(count, size=size, num_frames=num_frames, seed=seed, split=world_split, task=task,
                                p_reference=0.0)
        names = label_names(task)
        rows = ["label,youtube_id,time_start,time_end,split"]
        for i in range(count):
            label, youtube_id = names[clips.label(i)], f"{split[:2]}{seed:03d}{i:06d}"
            clip = folder / label.replace(" ", "_") / f"{youtube_id}_{0:06d}_{10:06d}.mp4"
            write_clip_once(clip, clips, i, num_frames)
            rows.append(f"{label},{youtube_id},0,10,{split}")
        csv_path = folder / f"{split}.csv"
        atomic_write_text(csv_path, "\n".join(rows) + "\n")
        paths.append(csv_path)
    return paths[0], paths[1]


def write_msrvtt_format(folder: str | os.PathLike, num_videos: int, size: int = 64, num_frames: int = 16,
                        seed: int = 0) -> tuple[Path, Path]:
    """Write an MSR-VTT-layout retrieval set from the synthetic world: ``video{N}.mp4`` clips (N from 7010, the
    test range), ``MSRVTT_data.json`` with two captions per video (the full sentence and a short one), and a
    1k-A-style ``MSRVTT_JSFUSION_test.csv`` with one caption per video. Returns (json, csv)."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clips = SyntheticVideos(num_videos, size=size, num_frames=num_frames, seed=seed, split="test")
    videos, sentences, rows = [], [], ["key,vid_key,video_id,sentence"]
    for i in range(num_videos):
        video_id = f"video{7010 + i}"
        write_clip_once(folder / f"{video_id}.mp4", clips, i, num_frames)
        main = clips.scene(i).main
        videos.append({"video_id": video_id, "split": "test"})
        sentences += [{"video_id": video_id, "caption": clips.caption(i)},
                      {"video_id": video_id, "caption": f"a {main.colour} {main.shape}"}]
        rows.append(f"ret{i},msr{7010 + i},{video_id},{clips.caption(i)}")
    data_json, split_csv = folder / "MSRVTT_data.json", folder / "MSRVTT_JSFUSION_test.csv"
    atomic_write_text(data_json, json.dumps({"videos": videos, "sentences": sentences}))
    atomic_write_text(split_csv, "\n".join(rows) + "\n")
    return data_json, split_csv


def shots_video(cuts: list[int], num_frames: int, size: int = 64, seed: int = 0, contrast: float = 40) -> np.ndarray:
    """uint8 (num_frames, size, size, 3): shots of different synthetic scenes, each with its object moving, cut hard
    at frames ``cuts`` (the first frame of each new shot): what a scene detector must find. Neighbouring shots'
    backgrounds differ by at least ``contrast`` grey levels (0: any two, some of them near-equal: harder cuts)."""
    bounds = [0, *cuts, num_frames]
    rng, shots, previous = _rng(seed + 2_750_159, "test", 0), [], None
    for start, end in zip(bounds, bounds[1:]):
        scene = sample_scene(rng, p_reference=0.5, motion=str(rng.choice(MOTIONS)))
        while previous is not None and abs(np.mean(scene.background) - np.mean(previous.background)) < contrast:
            scene = sample_scene(rng, p_reference=0.5, motion=str(rng.choice(MOTIONS)))
        shots.append(render_video(scene, size, end - start))
        previous = scene
    return np.concatenate(shots)


def gradual_video(num_frames: int, size: int = 64, seed: int = 0, dissolve_frames: int = 50,
                  sweeps: int = 1) -> np.ndarray:
    """uint8 (num_frames, size, size, 3) with change but no cut: a slow pan across a scene three frames wide (from
    its left edge to its right over the video), cross-dissolving over ``dissolve_frames`` in the middle into a
    second such pan. ``sweeps`` > 1: the camera sweeps across and back that many times (fast: a whip pan)."""
    rng = _rng(seed + 3_196_943, "test", 0)
    wide = 3 * size
    pans = []
    for _ in range(2):
        scene = sample_scene(rng, p_reference=1.0, motion="still")
        canvas = _background(scene, wide)
        for thing in (scene.main, scene.reference):
            _draw(canvas, replace(thing, size="big"))
        pans.append(np.clip(canvas, 0, 255))
    phase = np.linspace(0, sweeps, num_frames) % 2  # a triangle wave: across, then back
    shift = np.round(np.minimum(phase, 2 - phase) * (wide - size)).astype(int)  # (T,) the window's left edge
    frames = np.empty((num_frames, size, size, 3), np.float32)
    middle = num_frames // 2
    for t in range(num_frames):
        mix = np.clip((t - middle + dissolve_frames / 2) / dissolve_frames, 0, 1)
        top = wide // 2 - size // 2
        window = slice(top, top + size), slice(shift[t], shift[t] + size)
        frames[t] = (1 - mix) * pans[0][window] + mix * pans[1][window]
    return frames.round().astype(np.uint8)


QA_TYPES = ("colour", "shape", "direction", "start colour", "end colour")  # category_id = position
QA_QUESTIONS = {"colour": "what colour is it?", "shape": "what shape is it?", "direction": "which way does it move?",
                "start colour": "what colour is it at the start?", "end colour": "what colour is it at the end?"}


def scene_questions(scene: Scene) -> list[tuple[str, str]]:
    """(question type, answer) of the questions a clip answers: a moving (or still) object's colour, shape and
    direction ("still" for none); a colour-change clip's shape and its colour at the start and at the end."""
    if scene.turns is not None:
        return [("shape", scene.main.shape), ("start colour", scene.main.colour), ("end colour", scene.turns)]
    return [("colour", scene.main.colour), ("shape", scene.main.shape), ("direction", scene.motion)]


def write_qa_format(folder: str | os.PathLike, train_videos: int, test_videos: int, size: int = 64,
                    num_frames: int = 16, seed: int = 0) -> tuple[Path, Path]:
    """Write a video question-answering set from the synthetic world in MSRVTT-QA's layout: ``videos/video{N}.mp4``
    and ``train_qa.json``, ``val_qa.json`` (empty), ``test_qa.json`` (lists of ``{question, answer, video_id, id,
    category_id}``), plus ``question_types.json`` naming the categories (:data:`QA_TYPES`). Each split is half
    single-object clips (:class:`SyntheticVideos`: colour, shape, direction questions) and half colour-change clips
    (:class:`ColourChangeClips`: shape, colour at the start, colour at the end), so start/end and direction are
    answerable only from the order of the frames. Clips already written are kept. Returns (QA folder, videos)."""
    import json

    folder = Path(folder)
    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    video_id, question_id = 0, 0
    for split, count, world in (("train", train_videos, "train"), ("test", test_videos, "test")):
        moving = SyntheticVideos(count - count // 2, size, num_frames, seed, world, p_reference=0.0)
        changing = ColourChangeClips(count // 2, size, num_frames, seed, world)
        rows = []
        for clips in (moving, changing):
            for i in range(len(clips)):
                write_clip_once(videos / f"video{video_id}.mp4", clips, i, num_frames)
                for kind, answer in scene_questions(clips.scene(i)):
                    rows.append({"question": QA_QUESTIONS[kind], "answer": answer, "video_id": video_id,
                                 "id": question_id, "category_id": QA_TYPES.index(kind)})
                    question_id += 1
                video_id += 1
        atomic_write_text(folder / f"{split}_qa.json", json.dumps(rows))
    atomic_write_text(folder / "val_qa.json", "[]")
    atomic_write_text(folder / "question_types.json", json.dumps(dict(enumerate(QA_TYPES))))
    return folder, videos

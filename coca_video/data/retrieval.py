"""Video-text retrieval sets: MSR-VTT as distributed (1k-A and full test splits) and a generic (video, caption) CSV.

MSR-VTT files (see the protocols note):
  - ``MSRVTT_data.json``: ``{"videos": [{"video_id", "split", ...}], "sentences": [{"video_id", "caption"}]}``;
  - 1k-A: ``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``): 1,000 videos, one caption each;
  - full: the 2,990 test videos (``split == "test"`` in the JSON, ``video7010`` .. ``video9999``) with all their
    captions (20 each, two videos have 19);
  - a video-id list, one id a line (``train_list_full.txt``, ``val_list_full.txt``, ``test_list_full.txt`` as
    captioning codebases ship the standard 6,513 / 497 / 2,990 split): those videos with all their JSON captions. A
    list named as one of those splits that holds another number of videos gets a warning (kept in the set's
    ``warnings``, which captioning's protocol records): a subset is a fine smoke test, never the split's figure.
Captioning (and caption finetuning) read every split with all of each video's JSON sentences, as captioning papers
score MSR-VTT (``every_sentence``): the 1k-A list's videos too, which retrieval reads with the list's one sentence.
Videos are ``{video_id}.mp4`` (or ``.webm``) in one folder.
"""

from __future__ import annotations

import csv
import json
import sys
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import VideoTextSource
from ..errors import DataError, InputError
from ..storage import name_of

FULL_TEST_IDS = range(7010, 10000)
OFFICIAL_SPLIT_SIZES = {"train": 6513, "val": 497, "test": 2990}  # MSR-VTT's standard split (Xu et al., 2016)


@dataclass
class RetrievalSet:
    """Videos (paths), captions, and for each caption the index of its video."""

    videos: list[str]
    captions: list[str]
    caption_video: list[int]
    split: str
    empty_captions_dropped: int = 0  # rows whose caption was empty: warned about, left out, counted in the protocol
    warnings: list[str] = field(default_factory=list)  # said on stderr when loaded; outputs' protocols keep them
    references: str = ""  # where each video's captions come from, for protocols

    def __post_init__(self) -> None:
        if not self.videos or not self.captions:
            raise DataError(f"{self.split}: no videos or no captions")


def video_path(root: Path, video_id: str) -> str:
    """``root/{video_id}.mp4``, or the ``.webm`` some distributions ship when only that exists."""
    mp4 = root / f"{video_id}.mp4"
    webm = root / f"{video_id}.webm"
    return str(webm if not mp4.exists() and webm.exists() else mp4)


def load_msrvtt(data_json: str | Path | None, split: str, video_root: str | Path,
                every_sentence: bool = False) -> RetrievalSet:
    """MSR-VTT ``split``: the path of ``MSRVTT_JSFUSION_test.csv`` (1k-A: its one sentence a video, or with
    ``every_sentence`` all of each video's in ``data_json``: :func:`load_jsfusion_every_sentence`), a video-id list
    (.txt) or ``full`` (all captions of the 2,990 test videos from ``MSRVTT_data.json``)."""
    root = Path(video_root)
    if split != "full" and Path(split).suffix.lower() == ".txt":
        return load_video_list(Path(split), Path(data_json or ""), root)
    if split != "full" and every_sentence:
        return load_jsfusion_every_sentence(Path(split), Path(data_json) if data_json else None, root)
    if split != "full":
        return load_jsfusion(Path(split), root)
    data = read_json(Path(data_json or ""))
    split_of = {v["video_id"]: v.get("split") for v in data.get("videos", [])}
    has_splits = any(split_of.values())

    def in_test(video_id: str) -> bool:
        if has_splits:
            return split_of.get(video_id) == "test"
        return video_id.startswith("video") and int(video_id[5:]) in FULL_TEST_IDS

    check_sentences(Path(data_json), data["sentences"])
    sentences = [s for s in data["sentences"] if in_test(s["video_id"])]
    if not sentences:
        raise no_test_videos(Path(data_json), data["sentences"], root, has_splits)
    kept = non_empty(Path(data_json), sentences, lambda s: s["caption"])
    ids = sorted({s["video_id"] for s in kept}, key=lambda v: int(v[5:]))
    index = {video_id: i for i, video_id in enumerate(ids)}
    return RetrievalSet([video_path(root, v) for v in ids], [s["caption"].strip() for s in kept],
                        [index[s["video_id"]] for s in kept], "msrvtt-full", len(sentences) - len(kept),
                        references=f"{Path(data_json).name}: every sentence of each test video")


def load_video_list(list_path: Path, data_json: Path, root: Path) -> RetrievalSet:
    """The videos a list file names (one MSR-VTT id a line), each with all its captions in ``data_json``, in list
    order; the size of a list named as an official split is checked (:func:`split_size_warning`)."""
    if not list_path.is_file():
        raise DataError(f"{list_path}: MSR-VTT video list not found")
    try:
        ids = [line.strip() for line in list_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{list_path}: not UTF-8 text (expected one MSR-VTT video id a line)") from None
    if len(set(ids)) < len(ids):
        raise DataError(f"{list_path}: {len(ids) - len(set(ids))} video ids appear more than once")
    dataset = every_sentence_of(ids, list_path, data_json, root, f"msrvtt-{list_path.stem}")
    warning = split_size_warning(list_path, len(ids))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
        dataset.warnings.append(warning)
    return dataset


def load_jsfusion_every_sentence(path: Path, data_json: Path | None, root: Path) -> RetrievalSet:
    """The 1k-A list's videos, in file order, each with all its sentences in ``data_json`` (20 each in MSR-VTT,
    the list's own among them), as captioning papers score them. Without ``data_json``: the list's one sentence a
    video, with a warning (kept in the set's ``warnings``) that the figures are not that protocol's."""
    if data_json is None:
        one_each = load_jsfusion(path, root)
        warning = (f"{path}: one sentence a video; MSR-VTT captioning is scored against all of a video's sentences in "
                   f"MSRVTT_data.json (20 each): give it (source.msrvtt_data, --msrvtt-data) for the standard "
                   f"protocol; each video here has the list's one sentence")
        print(f"warning: {warning}", file=sys.stderr)
        one_each.warnings.append(warning)
        return one_each
    rows = read_csv_rows(path, required=("video_id", "sentence"))
    ids = list(dict.fromkeys(row["video_id"].strip() for row in rows))
    return every_sentence_of(ids, path, data_json, root, "msrvtt-1k-A")


def every_sentence_of(ids: list[str], listed_in: Path, data_json: Path, root: Path, split: str) -> RetrievalSet:
    """The videos ``ids`` (distinct, as ``listed_in`` names them), in that order, each with all its non-empty
    captions in ``data_json``; a video with none is an error naming both files."""
    data = read_json(data_json)
    check_sentences(data_json, data["sentences"])
    listed = {video_id: i for i, video_id in enumerate(ids)}
    sentences = [s for s in data["sentences"] if s["video_id"] in listed]
    kept = non_empty(data_json, sentences, lambda s: s["caption"])
    captioned = {s["video_id"] for s in kept}
    uncaptioned = [v for v in ids if v not in captioned]
    if uncaptioned:
        raise DataError(f"{listed_in}: {len(uncaptioned)} of its {len(ids)} videos have no caption in {data_json} "
                        f"(e.g. {uncaptioned[0]!r})")
    return RetrievalSet([video_path(root, v) for v in ids], [s["caption"].strip() for s in kept],
                        [listed[s["video_id"]] for s in kept], split, len(sentences) - len(kept),
                        references=f"{data_json.name}: every sentence of each video {listed_in.name} lists")


def split_size_warning(list_path: Path, size: int) -> str | None:
    """For a list whose name starts with an official split's (``train``, ``val``/``validate``, ``test``): a line
    saying so when it does not hold that split's 6,513 / 497 / 2,990 videos; None otherwise."""
    first = re.split(r"[_\-. ]", list_path.name.lower(), maxsplit=1)[0]
    split = {"validate": "val", "validation": "val"}.get(first, first)
    expected = OFFICIAL_SPLIT_SIZES.get(split)
    if expected is None or size == expected:
        return None
    return (f"{list_path}: named as MSR-VTT's {split} split, which has {expected:,} videos, but lists {size:,}; "
            f"figures on it are not the official split's")


def no_test_videos(path: Path, sentences: list[dict], root: Path, has_splits: bool) -> DataError:
    """The one-line error for an MSR-VTT file none of whose captions is of a test video: how many captions and
    videos it has, how many of those videos are under ``root``, a few of their ids, and the rule that left them out."""
    ids = sorted({s["video_id"] for s in sentences})
    on_disk = sum(Path(video_path(root, video_id)).exists() for video_id in ids)
    rule = "split 'test' in its 'videos' list" if has_splits else "video7010-video9999, as it has no splits"
    shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
    captions, videos = (f"{n} {word}{'s' * (n != 1)}" for n, word in ((len(sentences), "caption"), (len(ids), "video")))
    return DataError(f"{path}: {captions} of {videos} ({on_disk} of them in {root}), none "
                     f"of a test video of MSR-VTT's full split ({rule}): {shown or 'no video ids'}; for other "
                     f"videos give a captions CSV (--captions)")


def check_sentences(path: Path, sentences: object) -> None:
    """Every MSR-VTT sentence is a mapping with a ``video_id`` and a ``caption``; the first that is not is named."""
    if not isinstance(sentences, list):
        raise DataError(f"{path}: 'sentences' must be a list")
    for number, sentence in enumerate(sentences):
        if not isinstance(sentence, dict) or not isinstance(sentence.get("video_id"), str) or \
                not isinstance(sentence.get("caption"), str):
            raise DataError(f"{path}: sentence #{number} needs string 'video_id' and 'caption' fields, got "
                            f"{str(sentence)[:80]}")


def non_empty(path: Path, rows: list, caption_of) -> list:
    """``rows`` whose caption is not blank; the others are counted in a warning naming the file."""
    kept = [row for row in rows if (caption_of(row) or "").strip()]
    if len(kept) < len(rows):
        print(f"warning: {path}: {len(rows) - len(kept)} empty captions dropped", file=sys.stderr)
    return kept


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: MSR-VTT annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (expected MSRVTT_data.json)") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or "sentences" not in data:
        raise DataError(f"{path}: no 'sentences' list (expected MSRVTT_data.json)")
    return data


def load_jsfusion(path: Path, root: Path) -> RetrievalSet:
    """The 1k-A test split: one caption per video, in file order."""
    rows = read_csv_rows(path, required=("video_id", "sentence"))
    kept = non_empty(path, rows, lambda row: row["sentence"])
    videos = [video_path(root, row["video_id"]) for row in kept]
    return RetrievalSet(videos, [row["sentence"].strip() for row in kept], list(range(len(kept))), "msrvtt-1k-A",
                        len(rows) - len(kept), references=f"{path.name}: its one sentence a video")


def load_caption_csv(path: str | Path, video_root: str | Path | None = None) -> RetrievalSet:
    """A generic CSV with a video column (``video``, ``path`` or ``video_path``) and a caption column (``caption``,
    ``sentence`` or ``text``); several rows per video allowed. Relative video paths are taken from ``video_root``
    (default: the CSV's folder)."""
    path = Path(path)
    rows = read_csv_rows(path, required=())
    columns = rows[0].keys()
    video_key = next((c for c in ("video", "path", "video_path") if c in columns), None)
    caption_key = next((c for c in ("caption", "sentence", "text") if c in columns), None)
    if video_key is None or caption_key is None:
        raise DataError(f"{path}: needs a video column (video|path|video_path) and a caption column "
                                 f"(caption|sentence|text); found {list(columns)}")
    root = Path(video_root) if video_root else path.parent
    index: dict[str, int] = {}
    captions, caption_video = [], []
    kept = non_empty(path, rows, lambda row: row[caption_key])
    for row in kept:
        video = str(root / row[video_key]) if not Path(row[video_key]).is_absolute() else row[video_key]
        caption_video.append(index.setdefault(video, len(index)))
        captions.append(row[caption_key].strip())
    return RetrievalSet(list(index), captions, caption_video, path.name, len(rows) - len(kept),
                        references=f"{path.name}: every row of a video")


def read_csv_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: caption file not found")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: caption file is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                        f"{err.start}); save it as UTF-8") from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (found {list(rows[0])})")
    return rows


def load_shard_set(pattern: str) -> RetrievalSet:
    """The videos of the shards ``pattern`` names (:func:`~coca_video.data.shards.shard_paths`) with their captions
    as references, for ``retrieval`` and ``captioning`` (``source.shards``). Samples that cannot be scored (see
    :func:`~coca_video.data.shards.sample_problem`) and damaged shards are left out with a warning counting them;
    samples without a caption are counted as the CSV loader counts empty captions."""
    from .shards import read_shard, sample_caption, shard_paths  # torch's import comes with it: only when asked for

    shards = [read_shard(tar) for tar in shard_paths([pattern])]
    samples = [sample for shard in shards for sample in shard.samples]
    usable = [sample for sample in samples if sample.problem is None]
    captioned = [sample for sample in usable if sample_caption(sample)]
    warnings = []
    left_out = len(samples) - len(usable)
    damaged = [shard.path for shard in shards if shard.problem]
    if left_out or damaged:
        warnings.append(f"{pattern}: {left_out} of {len(samples)} samples have no usable video and are left out"
                        + (f"; {len(damaged)} shards are damaged or missing (e.g. {damaged[0]})" if damaged else ""))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return RetrievalSet([s.path for s in captioned], [sample_caption(s) for s in captioned],
                        list(range(len(captioned))), name_of(pattern), len(usable) - len(captioned), warnings)


def load_set(source: VideoTextSource, task: str, every_sentence: bool = False) -> RetrievalSet:
    """The videos and captions a config's ``source`` block names (retrieval, captioning and caption finetuning read
    the same block); ``task`` names the command in the error when it names nothing. ``every_sentence`` (captioning's
    protocol): the 1k-A list's videos with all their sentences in ``source.msrvtt_data`` (see
    :func:`load_jsfusion_every_sentence`); other splits and CSVs already give every caption of a video."""
    if source.shards:
        return load_shard_set(source.shards)
    if source.captions:
        return load_caption_csv(source.captions, source.videos or None)
    split = source.msrvtt_split or ("full" if source.msrvtt_data else None)  # the data file alone: its full test split
    if split and (source.msrvtt_data or split != "full"):
        return load_msrvtt(source.msrvtt_data or "", split, source.videos, every_sentence)
    raise InputError(f"{task} needs source.captions=<csv>, source.shards=<tar pattern>, or "
                     f"source.msrvtt_split=<JSFUSION csv>|<video-id list "
                     ".txt>|full (the last two need source.msrvtt_data=<MSRVTT_data.json>)")


def source_files(source: VideoTextSource) -> list[Path]:
    """The annotation files ``source`` names that exist: inputs that no output of a run may overwrite."""
    return [Path(p) for p in (source.captions, source.msrvtt_data, source.msrvtt_split) if p and Path(p).is_file()]

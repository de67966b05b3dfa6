"""Config as data: YAML files and dotted ``key=value`` overrides mapped strictly onto typed dataclasses.

The same convention serves every command and pipeline::

    cfg = load_config(ProbeConfig, "configs/probe/synthetic.yaml", ["optim.lr=1e-3", "mode=finetune"])

Unknown keys, wrong types and values outside a ``Literal`` raise :class:`ConfigError`, which names the file (or
``command line``), the dotted key and, for a typo, the closest valid keys. A YAML file may start from another one
with ``base: other.yaml`` (a path relative to the file; mmaction2's ``_base_``): the base is read first and the
file's own keys are merged over it, mapping by mapping.

Two blocks are shared by every task config, at the same paths: ``model`` (:class:`ModelConfig`: which weights, on
which device, at which precision) and, for the tasks that read videos, ``decode`` (:class:`DecodeConfig`: frames
per video, sampling rule, decoder, time limit, workers, batch).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import inspect
import io
import math
import re
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, NamedTuple, Sequence, TypeVar, Union

import yaml

from .errors import ConfigError

T = TypeVar("T")


class InvalidValue(ConfigError):
    """A value a config dataclass refused in ``__post_init__``; the message starts with the key relative to that
    dataclass (``num_frames must be >= 1, got 0``) and :func:`from_dict` prefixes the source and the dotted path."""


def check(ok: bool, key: str, expected: str, value: Any) -> None:
    """Raise :class:`InvalidValue` ``"{key} must {expected}, got {value!r}"`` unless ``ok``."""
    if not ok:
        raise InvalidValue(f"{key} must {expected}, got {value!r}")


def check_at_least(key: str, value: Any, minimum: int) -> None:
    """``value`` is a number >= ``minimum``."""
    check(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= minimum, key,
          f"be >= {minimum}", value)


def check_suffix(key: str, value: str | None, suffixes: tuple[str, ...], optional: bool = False) -> None:
    """``value`` is a path ending in one of ``suffixes`` (case-insensitive); None passes when ``optional``."""
    if value is None and optional:
        return
    check(isinstance(value, str) and Path(value).suffix.lower() in suffixes, key,
          f"be a path ending in {' or '.join(suffixes)}", value)


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build a ``schema`` dataclass from a YAML file (optional) and ``key=value`` overrides (applied last)."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data = read_yaml(path)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    if overrides:
        source = f"{source} + command line"
    return from_dict(schema, data, source)


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, merged over its ``base:`` file if it names one; a missing, unreadable or non-mapping
    file, or a cycle of bases, raises :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    if "base" not in data:
        return data
    base = path.parent / str(data.pop("base"))
    if base.resolve() in [p.resolve() for p in (*_seen, path)]:
        raise ConfigError(f"{path}: base: {base} leads back to itself")
    return merge_mappings(read_yaml(base, (*_seen, path)), data)


def merge_mappings(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: nested mappings merge key by key, anything else in ``update`` replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = merge_mappings(merged[key], value)
        merged[key] = value
    return merged


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``a.b=value``; the value is parsed as YAML (``1e-3`` -> float, ``true`` -> bool, ``null`` -> None)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"command line: override {item!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "a.b", 1)`` sets ``d["a"]["b"] = 1``, creating mappings on the way."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def from_dict(schema: type[T], data: dict[str, Any], source: str = "config", prefix: str = "") -> T:
    """Strictly convert a nested mapping into the ``schema`` dataclass."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    for key in data:
        if key not in fields:
            close = moved_keys(schema, str(key)) or difflib.get_close_matches(str(key), list(fields), n=3)
            hint = f" Did you mean: {', '.join(prefix + c for c in close)}?" if close else \
                f" Valid keys: {', '.join(fields)}."
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' for {schema.__name__}.{hint}")
    kwargs = {name: _convert(hints[name], data[name], source, f"{prefix}{name}") for name in fields if name in data}
    try:
        return schema(**kwargs)
    except InvalidValue as err:  # a schema's own value check: it names its key; we add the source and the path
        raise ConfigError(f"{source}: {prefix}{err}") from None


def optional_block(hint: Any) -> type | None:
    """The dataclass of a ``Block | None`` hint (a block that may be switched off), else None."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        blocks = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        if len(blocks) == 1 and type(None) in typing.get_args(hint):
            return blocks[0]
    return None


def leaf_keys(schema: type, prefix: str = "") -> list[str]:
    """Every leaf key of the ``schema`` dataclass as a dotted path, nested blocks (optional ones too) walked."""
    hints, keys = typing.get_type_hints(schema), []
    for f in dataclasses.fields(schema):
        if not f.init:
            continue
        block = hints[f.name] if dataclasses.is_dataclass(hints[f.name]) else optional_block(hints[f.name])
        keys += leaf_keys(block, f"{prefix}{f.name}.") if block else [f"{prefix}{f.name}"]
    return keys


def moved_keys(schema: type, key: str) -> list[str]:
    """Where a flat key that is not a field of ``schema`` lives now, as a block's key: ``caption_method`` ->
    ``caption.method``, ``msrvtt_data`` -> ``source.msrvtt_data``, ``seed`` -> ``train.seed`` (at most three)."""
    nested = [k for k in leaf_keys(schema) if "." in k]
    found = [k for k in nested if k.replace(".", "_") == key] or [k for k in nested if k.rsplit(".", 1)[1] == key]
    return found[:3]


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain nested dicts/lists (tuples become lists), ready for JSON or YAML."""
    return _plain(dataclasses.asdict(config))


def config_yaml(config: Any) -> str:
    """A dataclass as the YAML text :func:`load_config` reads back into an equal dataclass."""
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


class FieldDoc(NamedTuple):
    """One leaf key of a config dataclass, for help text: dotted key, type, default (as YAML) and description."""

    key: str
    type: str
    default: str
    help: str


def describe_fields(schema: type, prefix: str = "") -> list[FieldDoc]:
    """Every leaf key of the ``schema`` dataclass, nested blocks flattened to dotted keys, in declaration order. The
    description of a field is the trailing ``# comment`` on its line in the source (empty if it has none)."""
    with auto_device_deferred():  # the default as written (auto), and no torch for --help
        defaults = schema()
        return _describe(schema, defaults, prefix)


def _describe(schema: type, defaults: Any, prefix: str) -> list[FieldDoc]:
    hints, comments = typing.get_type_hints(schema), field_comments(schema)
    docs: list[FieldDoc] = []
    for f in dataclasses.fields(schema):
        if not f.init:
            continue
        value = getattr(defaults, f.name)
        block = optional_block(hints[f.name])
        if dataclasses.is_dataclass(hints[f.name]):
            docs += _describe(hints[f.name], value, f"{prefix}{f.name}.")
        elif block is not None:  # a block that is off by default: its switch, then its keys' defaults when on
            docs.append(FieldDoc(f"{prefix}{f.name}", "true | false | mapping", yaml_value(value is not None),
                                 comments.get(f.name, "")))
            docs += _describe(block, value if value is not None else block(), f"{prefix}{f.name}.")
        else:
            docs.append(FieldDoc(f"{prefix}{f.name}", type_name(hints[f.name]), yaml_value(value),
                                 comments.get(f.name, "")))
    return docs


def field_comments(schema: type) -> dict[str, str]:
    """``{field: comment}`` from the trailing comments of the field lines of ``schema`` and its base classes."""
    comments: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):  # defined where there is no source (an interactive session)
            continue
        comments.update(_trailing_comments(source))
    return comments


def _trailing_comments(source: str) -> dict[str, str]:
    """``name: ...  # comment`` lines of a class body (one level in) as ``{name: comment}``."""
    names: dict[int, str] = {}
    comments: dict[str, str] = {}
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for token, following in zip(tokens, tokens[1:]):
        if token.type == tokenize.NAME and following.string == ":" and token.start[1] > 0 \
                and token.line[:token.start[1]].strip() == "":
            names.setdefault(token.start[0], token.string)
        elif token.type == tokenize.COMMENT and token.start[0] in names:
            comments.setdefault(names[token.start[0]], token.string.lstrip("#").strip())
    return comments


def type_name(hint: Any) -> str:
    """A type hint as help text: ``int``, ``str | null``, ``mean|attentional`` (a Literal), ``list[float]``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "|".join(yaml_value(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def yaml_value(value: Any) -> str:
    """``value`` as one line of YAML (``null``, ``true``, ``''``, ``[0.9, 0.999]``), as an override takes it."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _convert(hint: Any, value: Any, source: str, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source, f"{key}.")
    block = optional_block(hint)
    if block is not None and isinstance(value, bool):  # a block that may be off: true is on with its defaults
        return from_dict(block, {}, source, f"{key}.") if value else None
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, source, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[-1] if errors else f"{source}: {key} may not be null")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        item_hints = args[:1] if origin is list or (len(args) == 2 and args[1] is Ellipsis) else args
        if origin is tuple and item_hints is args and len(args) != len(value):
            raise ConfigError(f"{source}: {key} must have {len(args)} items, got {len(value)}")
        items = [_convert(item_hints[min(i, len(item_hints) - 1)], v, source, f"{key}[{i}]")
                 for i, v in enumerate(value)]
        return origin(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    return _convert_scalar(hint, value, source, key)


def _convert_scalar(hint: Any, value: Any, source: str, key: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{source}: {key} must be {name}, got {value!r} ({type(value).__name__})")


# -- blocks shared by every task ---------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    """Which model runs, and how: every task config embeds this as ``model``."""

    name: str = "default"  # architecture name (list_models()), checkpoint folder, hf-hub:<repo>, or "default"
    pretrained: str | None = None  # weights for an architecture: open_clip file or folder, hf-hub:<repo>, or a tag
    device: str = "auto"  # auto (a GPU when there is one: cuda, then mps, else cpu), cpu, cuda, cuda:N or mps
    precision: Literal["fp32", "bf16", "fp16", "int8", "auto"] = "fp32"  # fp16: GPU, int8: CPU, auto: fastest here
    image_size: int | None = None  # run at this resolution (position embeddings resampled); None: the model's own
    compile: bool | None = None  # torch.compile the image encoder; null: only for CUDA inference in bf16/fp16

    def __post_init__(self) -> None:
        check_device(self.device)
        self.device = resolve_device(self.device)  # auto is resolved once, so every user of the block sees a device
        # which precisions a device runs, in one place: fp16 is for accelerators, int8 (dynamic quantisation) for CPUs
        check(self.precision != "fp16" or self.device != "cpu", "precision", "be fp32, bf16 or int8 on the CPU "
              "(fp16 is for accelerators: cuda, mps)", self.precision)
        check(self.precision != "int8" or self.device == "cpu", "precision", f"be fp32, bf16 or fp16 on "
              f"{self.device} (int8 runs on the CPU only)", self.precision)
        if self.image_size is not None:
            check_at_least("image_size", self.image_size, 1)


@dataclass
class DecodeConfig:
    """How videos become frames: every task that reads videos embeds this as ``decode``."""

    num_frames: int = 16  # frames sampled per video (sampling=fps: frames decoded and encoded per batch item)
    sampling: Literal["eval", "linspace", "fps"] = "eval"  # TSN segment centres, CLIP4Clip's linspace, or score's fps
    fps: float = 1.0  # with sampling=fps: frames per second of video, each its own row (per-second embeddings)
    max_frames: int | None = None  # with sampling=fps: at most this many per video, spread over it (null: no cap)
    backend: Literal["auto", "decord", "pyav", "torchcodec"] = "auto"  # auto: PyAV (fastest here, see bench_decode)
    device: str = "cpu"  # where videos decode: cpu, or cuda/cuda:N (torchcodec on that GPU; backend auto|torchcodec)
    timeout: float | None = 120.0  # decode time limit, s: this + 1 s per frame + 0.1 s per video second (null: none)
    workers: int = 2  # decoding processes
    batch_size: int = 8  # videos per decode-and-encode batch

    def __post_init__(self) -> None:
        check_at_least("num_frames", self.num_frames, 1)
        check(isinstance(self.fps, (int, float)) and self.fps > 0, "fps", "be > 0 frames per second", self.fps)
        if self.max_frames is not None:
            check_at_least("max_frames", self.max_frames, 1)
        check(self.timeout is None or (isinstance(self.timeout, (int, float)) and self.timeout > 0), "timeout",
              "be > 0 seconds, or null for no limit", self.timeout)
        check_at_least("workers", self.workers, 0)
        check_at_least("batch_size", self.batch_size, 1)
        if self.device != "cpu":
            from .video.reader import check_decode_device

            try:  # the reader's own rules for where frames can be decoded, as this block's value errors
                check_decode_device(self.device, self.backend)
            except ValueError as err:
                raise InvalidValue(str(err)) from None
            check(self.timeout is not None or self.workers == 0, "timeout", "be set to decode on a GPU with workers "
                  "(it decodes in a fresh helper process; a forked worker cannot start CUDA)", self.timeout)
            check_device(self.device)
        if self.backend == "torchcodec" or self.device != "cpu":  # else no torchcodec: --help imports no numpy
            from .video.reader import check_torchcodec

            try:  # once, when the config is read, not as a loader traceback in every row
                check_torchcodec(self.device, self.backend)
            except ValueError as err:
                raise InvalidValue(str(err)) from None

    def frames_rule(self) -> str:
        """How frames are sampled, in words for metadata and reports: ``16 per video (eval)``, or ``1 per second,
        a row each (at most 600 per video)``."""
        if self.sampling != "fps":
            return f"{self.num_frames} per video ({self.sampling})"
        cap = f" (at most {self.max_frames} per video)" if self.max_frames else ""
        return f"{self.fps:g} per second, a row each{cap}"

    def require_clips(self, task: str) -> None:
        """Refuse ``sampling=fps`` (from the ``__post_init__`` of a task config that embeds this block as ``decode``)
        for a task that needs one clip of ``num_frames`` per video."""
        check(self.sampling != "fps", "decode.sampling", f"be eval or linspace for {task} (fps gives one row per "
              f"frame: score only)", self.sampling)


DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps|auto")


def check_device(device: str) -> None:
    """``device`` is cpu, cuda, cuda:N, mps or auto, and a GPU one exists on this machine."""
    check(isinstance(device, str) and DEVICE.fullmatch(device) is not None, "device",
          "be one of cpu, cuda, cuda:N, mps, auto", device)
    if device in ("cpu", "auto"):
        return
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise InvalidValue("device=mps: no MPS (Apple GPU) device on this machine; use device=cpu")
        return
    if not torch.cuda.is_available():
        raise InvalidValue(f"device={device}: no CUDA device on this machine; use device=cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise InvalidValue(f"device={device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


AUTO_DEVICE_DEFERRED = contextvars.ContextVar("auto_device_deferred", default=False)


@contextlib.contextmanager
def auto_device_deferred() -> Iterator[None]:
    """Within the block ``device: auto`` stays ``auto`` (finding the device imports torch): for reading a config's
    keys, defaults and errors before torch loads (``--help``, a typo on the command line)."""
    token = AUTO_DEVICE_DEFERRED.set(True)
    try:
        yield
    finally:
        AUTO_DEVICE_DEFERRED.reset(token)


def resolve_device(device: str) -> str:
    """``auto`` -> the first of cuda, mps, cpu this machine has (inside :func:`auto_device_deferred`: ``auto``); any
    other device name unchanged."""
    if device != "auto" or AUTO_DEVICE_DEFERRED.get():
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


@dataclass
class CaptionConfig:
    """How captions are decoded (:func:`coca_video.model.generate.generate_captions`) and what the generative
    pooler reads: every command that captions or trains captioning embeds this as ``caption``."""

    method: Literal["greedy", "beam", "top_p"] = "beam"  # decoding: beam search, greedy, or nucleus sampling
    max_len: int = 30  # most tokens per caption, start token included
    source: Literal["middle_frame", "all_frames"] = "middle_frame"  # the middle frame, or all frames via the pooler
    beam_size: int = 6  # beams of method=beam
    min_len: int = 5  # fewest tokens per caption, start token included (EOT blocked before)
    repetition_penalty: float = 1.0  # > 1 discourages repeating a token already in the caption (1.0: off)

    def __post_init__(self) -> None:
        check_at_least("max_len", self.max_len, 2)
        check_at_least("beam_size", self.beam_size, 1)
        check_at_least("min_len", self.min_len, 1)
        check(self.min_len < self.max_len, "min_len", f"be < max_len ({self.max_len})", self.min_len)
        check(isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty > 0,
              "repetition_penalty", "be > 0 (1.0: off; > 1 discourages repeats)", self.repetition_penalty)
        self.repetition_penalty = float(self.repetition_penalty)


@dataclass
class VideoTextSource:
    """Videos with reference captions (MSR-VTT or a CSV): retrieval, captioning and caption finetuning embed this as
    ``source``; :func:`coca_video.data.retrieval.load_set` reads it."""

    videos: str = ""  # folder of the videos (MSR-VTT: video{N}.mp4)
    captions: str | None = None  # CSV of (video, caption) rows; several rows a video: several references
    msrvtt_data: str | None = None  # MSRVTT_data.json (alone: its full test split)
    msrvtt_split: str | None = None  # full, a video-id list (test_list_full.txt) or MSRVTT_JSFUSION_test.csv (1k-A)
    shards: str | None = None  # WebDataset shards ('shards/{00000..00009}.tar'): their videos with each .txt caption


@dataclass
class ImageTextDataConfig:
    """Where pretraining pairs come from (:mod:`coca_video.data.image_text` reads them). ``kind``: ``synthetic`` (the
    built-in world), ``table`` (CSV, TSV or Parquet with ``img_key``/``caption_key`` columns, open_clip's
    --csv-img-key/--csv-caption-key), or ``webdataset`` (``path`` is a brace pattern of tar shards)."""

    kind: Literal["synthetic", "table", "webdataset"] = "synthetic"  # where the pairs come from
    path: str | None = None  # the table file, or a brace pattern of tar shards
    val_path: str | None = None  # held-out pairs that validate (kind table or webdataset; synthetic: its val split)
    img_key: str = "filepath"  # image path column of a table
    caption_key: str = "title"  # caption column of a table
    workers: int = 2  # data loading processes
    synthetic_size: int = 1_000_000  # positions per synthetic "epoch"


RAY_ADDRESS = re.compile(r"auto|ray://\S+|[\w.-]+:\d+")


Engine = Literal["local", "ray"]  # local: this process and its decoding workers; ray: Ray Data actors (ray.*)
EmbeddingDtype = Literal["float32", "float16"]  # how embeddings are stored: as computed, or rounded to half the bytes
ActionsFormat = Literal["auto", "kinetics", "mit", "list", "csv"]  # an action annotation file's layout: data/actions.py


@dataclass
class RayConfig:
    """Where and how ``engine: ray`` runs (score, retrieval, captioning, zeroshot, probe): the cluster, its decode and
    encode actor pools. A pool key left null is sized from the cluster found (:func:`coca_video.engines.ray_engine.
    sized`): one encode actor per GPU (1 GPU, 1 CPU each) with the other CPUs decoding; without GPUs (or a model on
    the CPU) one encode actor per node holding the node's cores as torch threads, as the local engine's model does,
    and a quarter of each node's CPUs (at least one) reserved for decode actors at half a CPU each, which run at the
    lowest priority and so take only the cores the model leaves idle."""

    address: str | None = None  # null: start a local cluster of this machine (ended with the run); auto or ray://...
    num_cpus: int | None = None  # logical CPUs of a local cluster (null: this machine's; at least the pools' + 1)
    decode_actors: int | None = None  # CPU actors decoding videos, each through its own time-limited helper process
    cpus_per_decoder: float | None = None  # CPUs a decode actor reserves
    encode_actors: int | None = None  # actors holding the model (loaded once each), turning decoded clips into rows
    cpus_per_encoder: float | None = None  # CPUs an encode actor reserves; its torch threads (null: its node's cores)
    gpus_per_encoder: float | None = None  # GPUs an encode actor reserves (a fraction shares a GPU; null: 1 for a model
    # on cuda when the cluster has GPUs, else 0)
    max_retries: int = 2  # times a crashed (or lost) actor is restarted and its batch retried, then the run fails
    verbose: bool = False  # show Ray's own log lines (its start-up WARNINGs, workers' output); false: its errors only

    def __post_init__(self) -> None:
        check(self.address is None or (isinstance(self.address, str) and RAY_ADDRESS.fullmatch(self.address)),
              "address", "be null (a local cluster), auto, ray://HOST:PORT or HOST:PORT", self.address)
        for key in ("decode_actors", "encode_actors"):
            if getattr(self, key) is not None:
                check_at_least(key, getattr(self, key), 1)
        for key in ("cpus_per_decoder", "cpus_per_encoder"):
            value = getattr(self, key)
            check(value is None or (isinstance(value, (int, float)) and value > 0), key, "be > 0 (or null: sized "
                  "from the cluster)", value)
        if self.gpus_per_encoder is not None:
            check_at_least("gpus_per_encoder", self.gpus_per_encoder, 0)
        check_at_least("max_retries", self.max_retries, 0)
        if self.num_cpus is not None:  # fewer and a pool waits forever for its actors' CPUs
            check_at_least("num_cpus", self.num_cpus, math.ceil(self.reserved_cpus()))

    def reserved_cpus(self) -> float:
        """The CPUs the pools set here in full (actors and CPUs each) reserve together; a pool with a null key
        counts as nothing until it is sized from the cluster."""
        pools = [(self.decode_actors, self.cpus_per_decoder), (self.encode_actors, self.cpus_per_encoder)]
        return sum(actors * cpus for actors, cpus in pools if actors is not None and cpus is not None)


# -- the training tasks' blocks (train.*, optim.*, probe.augment.*) -------------------------------------------------
@dataclass
class OptimConfig:
    """Optimiser and schedule. ``adafactor`` is big_vision's Adafactor as kept in timm (``AdafactorBigVision``):
    factored second moments with beta2 capped at ``betas[1]`` and a first moment with ``betas[0]`` -- the paper's
    beta1=0.9, beta2=0.999. (``torch.optim.Adafactor`` has no first moment, so it cannot express beta1.)"""

    name: Literal["adamw", "adafactor"] = "adamw"  # optimiser
    lr: float = 5e-4  # peak learning rate
    weight_decay: float = 0.01  # on weights only (not biases, norms, embeddings)
    betas: tuple[float, float] = (0.9, 0.999)  # first and second moment decay
    eps: float = 1e-8  # added to the denominator
    warmup_steps: int = 100  # linear warmup from 0 to lr
    schedule: Literal["cosine", "linear"] = "cosine"  # decay after warmup, down to min_lr_ratio * lr
    min_lr_ratio: float = 0.0  # the decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # gradients are scaled down to at most this total norm
    ema: float | None = None  # decay of an EMA of the trained weights, which evaluate and are saved (null/0: off)

    def __post_init__(self) -> None:
        check(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "be > 0", self.lr)
        check_at_least("weight_decay", self.weight_decay, 0)
        check(all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas), "betas", "be two numbers in [0, 1)",
              self.betas)
        check(isinstance(self.eps, (int, float)) and self.eps > 0, "eps", "be > 0", self.eps)
        check_at_least("warmup_steps", self.warmup_steps, 0)
        check(isinstance(self.min_lr_ratio, (int, float)) and 0 <= self.min_lr_ratio <= 1, "min_lr_ratio",
              "be in [0, 1]", self.min_lr_ratio)
        check(isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0, "grad_clip", "be > 0", self.grad_clip)
        check(self.ema is None or (isinstance(self.ema, (int, float)) and 0 <= self.ema < 1), "ema",
              "be in [0, 1) or null (0 and null: off)", self.ema)


@dataclass
class TrainLoop:
    """The training loop's keys, at ``train.*`` in every training task (a task subclasses it to add its own). A run
    lasts ``max_steps`` optimiser steps when set (the last epoch cut short), else ``epochs`` passes over the data."""

    seed: int = 0  # random seed (weights, data order, augmentation)
    epochs: int | None = 10  # passes over the training data (max_steps, when set, decides instead)
    max_steps: int | None = None  # the run's optimiser steps, as papers count them (null: epochs decide)
    batch_size: int = 128  # examples per optimiser step (global, across ranks)
    accum_steps: int = 1  # each rank's share of a batch runs as this many micro-batches (less memory, same step)
    grad_checkpointing: bool = False  # recompute activations in the backward pass (less memory)
    log_every: int = 0  # optimiser steps between step records in metrics.jsonl (0: none; epoch runs log each epoch)
    eval_every: int = 1  # epochs between validations (and after the last; the best is kept as checkpoints/best.pt)

    def __post_init__(self) -> None:
        check(self.epochs is None or (isinstance(self.epochs, int) and self.epochs >= 1), "epochs",
              "be >= 1 or null (max_steps decides)", self.epochs)
        check(self.max_steps is None or (isinstance(self.max_steps, int) and self.max_steps >= 1), "max_steps",
              "be >= 1 or null (epochs decide)", self.max_steps)
        check(self.epochs is not None or self.max_steps is not None, "epochs", "be set when max_steps is null",
              self.epochs)
        for key in ("batch_size", "accum_steps"):
            check_at_least(key, getattr(self, key), 1)
        check_at_least("log_every", self.log_every, 0)
        check_at_least("eval_every", self.eval_every, 0)

    def validates_after(self, epoch: int, epochs: int) -> bool:
        """Whether the run validates after epoch ``epoch`` (1-based) of ``epochs``: every ``eval_every``-th and the
        last (``eval_every: 0``: never)."""
        return bool(self.eval_every) and (epoch % self.eval_every == 0 or epoch == epochs)

    def total_steps(self, steps_per_epoch: int | None) -> int:
        """The run's optimiser steps: ``max_steps``, or every batch of every epoch."""
        if self.max_steps:
            return self.max_steps
        if steps_per_epoch is None:
            raise ConfigError("train.max_steps: set it (this task streams its data, so epochs cannot end the run)")
        return self.epochs * steps_per_epoch


@dataclass
class ClipAugmentConfig:
    """Finetuning's augmentation: which frames (TSN's random one per segment, or the evaluation's), one crop box and
    one flip per clip (every frame alike), and optional mixup/cutmix of the clips of a batch. Evaluation always takes
    its own frames, resizes and centre-crops."""

    scale: tuple[float, float] = (0.25, 1.0)  # random resized crop: share of the frame's area kept, (min, max)
    ratio: tuple[float, float] = (0.75, 1.3333)  # random resized crop: width/height of the box, (min, max)
    flip: bool = True  # horizontal flip, p=0.5 per clip (false for direction-sensitive classes: left/right)
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha) over clips of a batch (0 = off)
    cutmix: float = 0.0  # alpha of cutmix's Beta(alpha, alpha), one box for all frames (0 = off)
    temporal_jitter: bool = True  # TSN: a random frame in each segment (false: the evaluation's frames, its centres)

    def __post_init__(self) -> None:
        self.scale, self.ratio = tuple(self.scale), tuple(self.ratio)
        check(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1, "scale",
              "be [min, max] with 0 < min <= max <= 1", list(self.scale))
        check(len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1], "ratio", "be [min, max] with 0 < min <= max",
              list(self.ratio))
        check(self.mixup >= 0, "mixup", "be >= 0 (0 = off)", self.mixup)
        check(self.cutmix >= 0, "cutmix", "be >= 0 (0 = off)", self.cutmix)

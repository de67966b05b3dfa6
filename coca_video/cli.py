"""The ``coca-video`` command: thin argument parsing over the library and the tasks' ``run(cfg)``.

Every task command takes ``--config FILE`` and dotted ``key=value`` overrides of its config dataclass; the
convenience flags of a command (``--labels``, ``--out``, ...) are just spellings of the same overrides.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from . import __version__
from .config import auto_device_deferred, config_yaml, describe_fields, load_config
from .errors import INTERRUPTED, InputError, UserError


EXIT_STATUSES = f"""exit status:
  0    done
  1    a run in which no input succeeded (every video failed: stderr names them)
  2    a usage, config or input error: one line on stderr naming the key or file, and nothing written
  {INTERRUPTED}  interrupted (Ctrl-C): one line on stderr; what was flushed so far is kept"""


class Flag:
    """A command-line flag that sets config field ``key`` (``switch``: a boolean that needs no value)."""

    def __init__(self, name: str, key: str, help: str, switch: bool = False, positional: bool = False,
                 many: bool = False) -> None:
        self.name, self.key, self.help, self.switch, self.positional = name, key, help, switch, positional
        self.many = many  # a positional that takes several values (a shell glob), or an option given several times:
        # the key gets a list

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.positional:
            parser.add_argument(self.key, nargs="*" if self.many else "?", metavar=self.name, help=self.help)
        elif self.switch:
            parser.add_argument(self.name, dest=self.key, action="store_const", const="true", help=self.help)
        elif self.many:
            parser.add_argument(self.name, dest=self.key, action="append", help=self.help)
        else:
            parser.add_argument(self.name, dest=self.key, help=self.help)


MODEL_FLAGS = [  # the shared model block, on every task command that has a model
    Flag("--model", "model.name", "model name or checkpoint folder (default: the built-in default model)"),
    Flag("--pretrained", "model.pretrained", "weights: open_clip file or folder, hf-hub:REPO, or a pretrained tag"),
    Flag("--device", "model.device", "auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"),
    Flag("--precision", "model.precision", "fp32, bf16, fp16 (GPU), int8 (CPU), or auto: the fastest that passes "
         "the fidelity gates here; training: fp32, bf16 autocast or auto (default fp32, exact to open_clip)"),
]
FRAMES_FLAG = Flag("--frames", "decode.num_frames", "frames per video (default 16)")
ENGINE_FLAG = Flag("--engine", "engine", "local (default) or ray: decode and encode actor pools on Ray Data (ray.* "
                   "keys; pip install 'coca-video[ray]')")

SCORE_FLAGS = [
    Flag("VIDEOS", "videos", "folders (searched recursively), videos, .txt lists of paths, CSV/Parquet tables "
         "with a path column, or WebDataset .tar shards ('shards/{00000..00099}.tar'): one or several (a shell glob)",
         positional=True, many=True),
    Flag("--labels", "labels", "class list: names per line, a CSV with a name column, or a Kinetics annotation CSV"),
    Flag("--probe", "probe", "a trained probe folder (the probe task's output_dir/probe) instead of --labels"),
    Flag("--out", "out", "scores table, .parquet or .csv (default scores.parquet)"),
    Flag("--caption", "caption", "add a caption per video", switch=True),
    Flag("--frame-embeddings", "frame_embeddings", "also store per-frame embeddings", switch=True),
    Flag("--report", "report", "write an HTML report to this path"),
    Flag("--top-k", "top_k", "labels per video (default 5)"),
    Flag("--qa-model", "qa_model", "a videoqa model folder (videoqa's output_dir/model): answer each --question"),
    Flag("--question", "question", "a question to answer about every video (with --qa-model; repeat it for "
         "several: columns answer_1, answer_2, ...; one: column answer)", many=True),
    ENGINE_FLAG,
]

VIDEO_TEXT_FLAGS = [  # retrieval's and captioning's inputs: the same loaders (data/retrieval.py)
    Flag("--videos", "source.videos", "folder of the videos"),
    Flag("--captions", "source.captions", "CSV of (video, caption) rows; several rows a video are several references"),
    Flag("--msrvtt-data", "source.msrvtt_data", "MSRVTT_data.json (alone: its full test split)"),
    Flag("--msrvtt-split", "source.msrvtt_split", "full (the 2,990 test videos, all references), a video-id list "
         "(train_list_full.txt, test_list_full.txt: those videos, all references) or MSRVTT_JSFUSION_test.csv (1k-A)"),
    Flag("--captions-from-shards", "source.shards", "WebDataset .tar shards (a brace pattern, tars or a folder): "
         "their videos, each sample's .txt (else its json caption) as its reference"),
]

RETRIEVAL_FLAGS = [
    *VIDEO_TEXT_FLAGS,
    Flag("--out", "out", "metrics JSON (ranks CSV and report go beside it)"),
    FRAMES_FLAG,
    ENGINE_FLAG,
]

CAPTIONING_FLAGS = [
    *VIDEO_TEXT_FLAGS,
    Flag("--out", "out", "metrics JSON (predictions CSV and report go beside it)"),
    Flag("--caption-method", "caption.method", "beam (default), greedy or top_p"),
    FRAMES_FLAG,
    ENGINE_FLAG,
]

FINETUNE_CAPTIONS_FLAGS = [
    *VIDEO_TEXT_FLAGS,
    Flag("--output-dir", "output_dir", "model/, checkpoints, logs and metrics.json (default runs/finetune_captions)"),
    FRAMES_FLAG,
]

VIDEOQA_FLAGS = [
    Flag("--videos", "source.videos", "folder of the videos (MSRVTT-QA: video{N}.mp4; MSVD-QA: its clips)"),
    Flag("--qa-dir", "source.qa_dir", "the release's QA folder: train_qa.json, val_qa.json, test_qa.json "
         "(MSVD-QA: with youtube_mapping.txt)"),
    Flag("--qa-csv", "source.qa_csv", "a CSV of video,question,answer[,split] rows instead of --qa-dir"),
    Flag("--output-dir", "output_dir", "metrics.json, predictions.csv, report.html, model/ (default runs/videoqa)"),
    FRAMES_FLAG,
    ENGINE_FLAG,
]

ZEROSHOT_FLAGS = [
    Flag("--annotations", "annotations", "annotation file: Kinetics CSV, MiT CSV, path-label list, or path,label CSV"),
    Flag("--video-root", "video_root", "folder of the videos"),
    Flag("--labels", "classes", "class list file, or kinetics400|600|700|moments_in_time (default: the file's labels)"),
    Flag("--out", "out", "metrics JSON (default runs/zeroshot/metrics.json)"),
    FRAMES_FLAG,
    ENGINE_FLAG,
]

SERVE_FLAGS = [
    Flag("EMBEDDINGS", "embeddings", "<out>.embeddings.parquet written by score", positional=True),
    Flag("--scores", "scores", "score's --out table (.parquet or .csv): top-1 labels and captions in the results"),
    Flag("--host", "host", "address to bind (default 127.0.0.1; another prints a warning: set a token)"),
    Flag("--port", "port", "TCP port (default 8000; 0: any free one)"),
    Flag("--token", "token", "require Authorization: Bearer TOKEN on every request (default: $COCA_VIDEO_TOKEN)"),
    Flag("--dedup", "dedup", "a coca-video dedup file of these embeddings: hide the rows it removed"),
]

DEDUP_FLAGS = [
    Flag("EMBEDDINGS", "embeddings", "<out>.embeddings.parquet written by score", positional=True),
    Flag("--eps", "eps", "a row goes when its cosine similarity to a higher-ranked row of its cluster is > 1 - eps "
         "(default 0.05)"),
    Flag("--out", "out", "the dedup table, .parquet (default dedup.parquet; its histogram: <stem>.similarity.png)"),
    Flag("--clusters", "clusters", "k-means clusters (default 0: ceil(sqrt(rows)))"),
]


class Task(NamedTuple):
    """A task command: its module under ``coca_video.tasks``, the config dataclass there, help and flags, and
    example invocations (valid ones: a test loads each example's overrides into the config)."""

    module: str
    schema: str
    help: str
    flags: list[Flag]
    examples: list[str]
    model_flags: bool = True  # whether the shared model block's flags apply (a task without a model has none)
    config_module: str | None = None  # where the config dataclass lives when the task module imports torch

    def all_flags(self) -> list[Flag]:
        """The task's flags, then the model block's when it has one."""
        return [*self.flags, *(MODEL_FLAGS if self.model_flags else [])]

    def config_class(self) -> type:
        """The task's config dataclass, from its torch-free module (:attr:`config_module`, else the task's)."""
        return getattr(importlib.import_module(f"coca_video.tasks.{self.config_module or self.module}"), self.schema)


TASKS = {
    "pretrain": Task("pretrain", "PretrainConfig", "image-text pretraining (contrastive + captioning)", [],
                     ["--config configs/pretrain/tiny_synthetic.yaml train.max_steps=100 output_dir=runs/x"],
                     config_module="pretrain_config"),
    "score": Task("score", "ScoreConfig", "score a folder of videos: zero-shot labels, embeddings, captions",
                  SCORE_FLAGS, ["VIDEO_DIR --labels kinetics400 --caption --out scores.parquet",
                                "VIDEO_DIR --labels classes.txt decode.num_frames=8 top_k=3 --print-config"],
                  config_module="score_config"),
    "retrieval": Task("retrieval", "RetrievalConfig", "zero-shot video-text retrieval recall (MSR-VTT or a CSV)",
                      RETRIEVAL_FLAGS, ["--videos clips/ --captions captions.csv --out runs/r/metrics.json",
                                        ("--videos MSRVTT/videos --msrvtt-data MSRVTT_data.json --msrvtt-split full "
                                         "video_pooling=attentional")], config_module="retrieval_config"),
    "captioning": Task("captioning", "CaptioningConfig", "video captioning scored with BLEU/METEOR/ROUGE-L/CIDEr "
                       "(MSR-VTT or a CSV)", CAPTIONING_FLAGS,
                       ["--videos MSRVTT/videos --msrvtt-data MSRVTT_data.json --msrvtt-split full",
                        "--videos clips/ --captions captions.csv --out runs/c/metrics.json caption.source=all_frames"],
                       config_module="captioning_config"),
    "finetune-captions": Task("finetune_captions", "FinetuneCaptionsConfig", "caption finetuning on video-text pairs "
                              "(captioning loss; image encoder frozen by default)", FINETUNE_CAPTIONS_FLAGS,
                              ["--videos clips/ --captions captions.csv --output-dir runs/ft train.epochs=20",
                               ("--config configs/captioning/synthetic_finetune.yaml source.captions=clips/captions.csv "
                                "train.freeze=[] caption.source=middle_frame")],
                              config_module="finetune_captions_config"),
    "videoqa": Task("videoqa", "VideoQAConfig", "video question answering through the multimodal decoder "
                    "(MSRVTT-QA, MSVD-QA or a CSV): trained answer head, zero-shot ranking or generation",
                    VIDEOQA_FLAGS, ["--videos MSRVTT/videos --qa-dir MSRVTT-QA --output-dir runs/qa",
                                    ("--config configs/videoqa/synthetic.yaml --qa-dir syn --videos syn/videos "
                                     "temporal_embedding=true"),
                                    "--videos clips/ --qa-csv qa.csv mode=zeroshot"], config_module="videoqa_config"),
    "zeroshot": Task("zeroshot", "ZeroShotConfig", "zero-shot action recognition: top-1/top-5 on an annotated set",
                     ZEROSHOT_FLAGS, ["--annotations k400/validate.csv --video-root k400/val --labels kinetics400",
                                      "--annotations val.csv --video-root videos/ video_pooling=attentional"],
                     config_module="zeroshot_config"),
    "serve": Task("serve", "ServeConfig", "search and watch a scored video library in the browser (pip install "
                  "'coca-video[serve]')", SERVE_FLAGS,
                  ["scores.embeddings.parquet --scores scores.parquet",
                   "scores.embeddings.parquet --host 0.0.0.0 --port 8080 --token SECRET limits.max_k=50",
                   "scores.embeddings.parquet --dedup dedup.parquet"], config_module="serve_config"),
    "dedup": Task("dedup", "DedupConfig", "find near-duplicate videos or segments (SemDeDup) and write which to keep",
                  DEDUP_FLAGS, ["scores.embeddings.parquet --eps 0.05 --out dedup.parquet",
                                "scores.embeddings.parquet --eps 0.1 --clusters 1000 kmeans=faiss iterations=20"],
                  model_flags=False, config_module="dedup_config"),
    "probe": Task("probe.task", "ProbeConfig", "action recognition: attentional-pooler probe, frozen or finetuned",
                  [ENGINE_FLAG],
                  ["--config configs/probe/synthetic.yaml train.epochs=2 optim.lr=1e-3",
                   ("--model coca_ViT-B-32 --pretrained laion2b_s13b_b90k mode=finetune data.train=k400/train.csv "
                    "data.val=k400/validate.csv data.video_root=/data/k400")], config_module="probe.config"),
}


def config_help(schema: type) -> str:
    """Every leaf key of ``schema`` (dotted) with its type, default and description, for a command's --help."""
    lines = ["config keys (key=value after the options, or in the --config YAML):"]
    for doc in describe_fields(schema):
        lines.append(f"  {doc.key}: {doc.type} = {doc.default}")
        if doc.help:
            lines.append(f"      {doc.help}")
    return "\n".join(lines)


def task_epilog(name: str, task: Task) -> str:
    """The tail of ``coca-video NAME --help``: the config keys, then examples."""
    examples = "\n".join(f"  coca-video {name} {example}" for example in task.examples)
    return f"{config_help(task.config_class())}\n\nexamples:\n{examples}"


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser. A task command's help ends with its config keys, read from the dataclass only when
    help is shown (importing a task loads torch); an unknown flag gets a "did you mean" from this command's flags."""

    def __init__(self, *args: Any, task: tuple[str, Task] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task = task

    def format_help(self) -> str:
        if self.task is not None and self.epilog is None:
            self.epilog = task_epilog(*self.task)
        return super().format_help()

    def reject(self, unknown: list[str]) -> None:
        """Exit 2 with this command's usage, naming the unrecognised arguments and the closest flags."""
        flags = list(self._option_string_actions)
        hints = [f"{token}: did you mean {' or '.join(close)}?" for token in unknown if token.startswith("-")
                 for close in [difflib.get_close_matches(token.partition("=")[0], flags, n=2)] if close]
        hint = f" ({'; '.join(hints)})" if hints else ""
        self.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")


def task_command(task: Task) -> Callable[[argparse.Namespace], None]:
    """A subcommand that fills the task's config from ``--config``, its flags and ``key=value`` overrides, then
    runs the task, or with ``--print-config`` prints the resolved config as YAML (``--config`` reads it back)."""

    def command(args: argparse.Namespace) -> None:
        cfg = task_config(task, args)  # again, now with model.device found (torch is loaded)
        if args.print_config:
            print(config_yaml(cfg), end="")
            return
        result = importlib.import_module(f"coca_video.tasks.{task.module}").run(cfg)
        from .distributed import get_info  # torch: only once a task runs

        if get_info().is_main:
            print(json.dumps(result, indent=2))

    return command


def task_config(task: Task, args: argparse.Namespace, device_deferred: bool = False) -> Any:
    """The task's config from ``--config``, its flags and ``key=value`` overrides; ``device_deferred``: with
    ``model.device: auto`` left as it is, so that reading it imports no torch (a config error is one line at once)."""
    from_flags = [f"{f.key}={json.dumps(value) if f.positional or f.many else value}" for f in task.all_flags()
                  for value in [getattr(args, f.key)] if value is not None]  # a path stays a string (JSON is YAML)
    with auto_device_deferred() if device_deferred else contextlib.nullcontext():
        return load_config(task.config_class(), args.config, [*from_flags, *args.overrides])


def cmd_convert(args: argparse.Namespace) -> None:
    """Turn an open_clip CoCa checkpoint into a coca-video checkpoint folder (with the tokenizer's files)."""
    from .io import check_publishable
    from .model import create_model, save_pretrained, tokenizer_files

    check_publishable(args.dst)  # before the (slow) load: never after it, never by deleting what is there
    model = create_model(args.model, pretrained=args.src)
    folder = save_pretrained(model, args.dst, tokenizer_files(args.model))
    print(f"wrote {folder} ({sum(p.numel() for p in model.parameters()):,} parameters, architecture {args.model})")


def cmd_search(args: argparse.Namespace) -> None:
    """Rank the videos of an embeddings file for one or more text queries (the text model loads once)."""
    from .io import atomic_write_text, check_output_file
    from .search import is_search_output, read_queries, search, search_rows

    queries = [*args.query, *(read_queries(args.queries) if args.queries else [])]
    if not queries:
        raise InputError("search: give a query, or --queries FILE with one per line")
    if args.out:
        inputs = [Path(args.embeddings), *([Path(args.queries)] if args.queries else []),
                  *([Path(args.dedup)] if args.dedup else [])]
        check_output_file(args.out, inputs, is_search_output(args.out), "--out")
    results = search(args.embeddings, queries, args.k, args.model, pretrained=args.pretrained, dedup=args.dedup)
    if args.json or args.out:
        text = json.dumps(search_rows(queries, results), indent=2) + "\n"
        if args.out:
            atomic_write_text(args.out, text)
            print(f"wrote {args.out} ({len(queries)} queries, {sum(map(len, results))} hits)")
        else:
            print(text, end="")
        return
    for query, hits in zip(queries, results):
        if len(queries) > 1:
            print(f"# {query}")
        for rank, hit in enumerate(hits, start=1):
            print(f"{rank:3d}  {hit.score:+.4f}  {hit}")


def cmd_index(args: argparse.Namespace) -> None:
    """Build the approximate nearest-neighbour index search uses for large embeddings files (needs usearch)."""
    from .search import INDEX_MIN_QUERIES, INDEX_MIN_ROWS, build_index

    summary = build_index(args.embeddings, args.metric)
    print(f"wrote {summary['index']} ({summary['rows']} rows, metric {summary['metric']}, {summary['seconds']} s); "
          f"search uses it for {INDEX_MIN_QUERIES} or more queries in files of more than {INDEX_MIN_ROWS:,} rows while "
          f"the file is unchanged")


def cmd_merge(args: argparse.Namespace) -> None:
    """Join the per-rank result parts of a score run into its output table and embeddings file."""
    from .data.results import merge

    scores = merge(args.out)
    if scores is None:
        raise InputError(f"{args.out}.parts: no result parts to merge")
    print(f"wrote {args.out} ({scores.num_rows} videos)")


def cmd_models(args: argparse.Namespace) -> None:
    """List the model architectures and the pretrained tags each takes (--model NAME --pretrained TAG)."""
    from .model import describe_models

    records = describe_models()
    if args.json:
        print(json.dumps(records, indent=2))
        return
    print(f"{'model':<16}{'parameters':>12}{'encoder + decoder + poolers':>30}{'Table 1 (enc + dec)':>24}"
          f"{'image':>7}{'embed':>7}  pretrained")
    for record in records:
        weights = ", ".join(record["pretrained"]) or \
            ("its own (trained on the synthetic world: coloured shapes)" if record["built_in_weights"] else "-")
        c, paper = record["counts"], record["paper"]
        split = f"{c['encoder'] / 1e6:.1f} + {c['decoder'] / 1e6:.1f} + {c['poolers'] / 1e6:.1f}"
        table1 = f"{paper['total'] / 1e6:.0f} M ({paper['encoder'] / 1e6:.0f} + {paper['decoder'] / 1e6:.0f})" \
            if paper else "-"
        print(f"{record['model']:<16}{record['parameters'] / 1e6:>10.1f} M{split:>30}{table1:>24}"
              f"{record['image_size']:>7}{record['embed_dim']:>7}  {weights}")
    print("\nTable 1: Yu et al. 2022 (CoCa), whose counts leave out the attentional poolers (docs/models.md, \"Model sizes\").")
    print("\nAlso accepted: --model FOLDER (a coca-video checkpoint), --model/--pretrained hf-hub:REPO, and "
          "--pretrained FILE or FOLDER (open_clip weights for the named architecture).")


def cmd_demo(args: argparse.Namespace) -> None:
    """The README's demo: score a folder of generated videos with the built-in default model, offline."""
    from .tasks.demo import run_demo

    run_demo(Path(args.output), args.videos)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coca-video", description=__doc__, epilog=EXIT_STATUSES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"coca-video {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for name, spec in TASKS.items():
        task = commands.add_parser(name, help=spec.help, task=(name, spec),
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   description=f"{spec.help}. Any config key below can be set as a dotted "
                                   "key=value after the options; the flags are spellings of the same keys.")
        for flag in spec.all_flags():
            flag.add_to(task)
        task.add_argument("--config", type=Path, help="YAML file (fields not given keep their defaults)")
        task.add_argument("--print-config", action="store_true",
                          help="print the resolved config as YAML (a valid --config file) and exit")
        task.add_argument("overrides", nargs="*", metavar="key=value", help="config keys, listed below")
        task.set_defaults(func=task_command(spec), task_spec=spec)
    convert = commands.add_parser("convert", help=cmd_convert.__doc__)
    convert.add_argument("src", help="open_clip checkpoint: .bin/.pt/.safetensors file, folder, or hf-hub:<repo>")
    convert.add_argument("dst", type=Path, help="output folder (config.json, model.safetensors, tokenizer)")
    convert.add_argument("--model", default="coca_ViT-B-32", help="architecture of the checkpoint")
    convert.set_defaults(func=cmd_convert)
    search = commands.add_parser("search", help=cmd_search.__doc__)
    search.add_argument("embeddings", help="<out>.embeddings.parquet written by score")
    search.add_argument("query", nargs="*", help="texts to search for (each gets its own ranking)")
    search.add_argument("--queries", help="a text file of further queries, one per line")
    search.add_argument("-k", type=int, default=10, help="how many videos to list per query")
    search.add_argument("--model", default=None, help="text model (default: the one that made the embeddings)")
    search.add_argument("--pretrained", default=None,
                        help="its weights (default: those that made the embeddings, when --model is theirs)")
    search.add_argument("--dedup", default=None, help="a coca-video dedup file of these embeddings: hide the rows it "
                        "removed")
    output = search.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON list of {query, rank, path, score, "
                        "start, end} instead of a table")
    output.add_argument("--out", help="write that JSON list to this file")
    search.set_defaults(func=cmd_search)
    index = commands.add_parser("index", help=cmd_index.__doc__)
    index.add_argument("embeddings", help="<out>.embeddings.parquet written by score")
    index.add_argument("--metric", choices=["cos", "ip"], default="cos",
                       help="cosine or inner product (the same ranking on normalised embeddings; default cos)")
    index.set_defaults(func=cmd_index)
    merge = commands.add_parser("merge", help=cmd_merge.__doc__)
    merge.add_argument("out", help="the score run's --out")
    merge.set_defaults(func=cmd_merge)
    models = commands.add_parser("models", help=cmd_models.__doc__)
    models.add_argument("--json", action="store_true", help="print a JSON list of records instead of a table")
    models.set_defaults(func=cmd_models)
    demo = commands.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument("--output", default="demo_output", help="folder for the videos and results")
    demo.add_argument("--videos", type=int, default=24, help="how many videos to generate")
    demo.set_defaults(func=cmd_demo)
    return parser


OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")  # key=value; any other bare token is an input path


def sort_bare_tokens(args: argparse.Namespace, task: Task, extra: list[str]) -> list[str]:
    """Sort the bare tokens of a task command wherever they stood: ``key=value`` ones become overrides, the others
    the command's positional input (a list where it takes several). Returns the tokens that fit nowhere: unknown
    flags, and inputs beyond what the command takes."""
    flag = next((f for f in task.flags if f.positional), None)
    given = getattr(args, flag.key) if flag else None
    tokens = [*(given if isinstance(given, list) else [given] if given is not None else []), *args.overrides,
              *(token for token in extra if not token.startswith("-"))]
    args.overrides = [token for token in tokens if OVERRIDE.match(token)]
    inputs = [token for token in tokens if not OVERRIDE.match(token)]
    taken = len(inputs) if flag is not None and flag.many else min(len(inputs), 1 if flag is not None else 0)
    if flag is not None:
        setattr(args, flag.key, (inputs if taken > 1 else inputs[0]) if taken else None)
    return [*(token for token in extra if token.startswith("-")), *inputs[taken:]]


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` (so a bad flag shows that command's usage, not the top level's)."""
    for action in parser._subparsers._group_actions:  # noqa: SLF001 -- argparse keeps subparsers only here
        if name in action.choices:
            return action.choices[name]
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; a mistake exits 2 with the command's usage (argparse's own SystemExit)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides and inputs may come after options too (argparse alone takes them only before the first)
    if getattr(args, "task_spec", None) is not None:
        extra = sort_bare_tokens(args, args.task_spec, extra)
    if extra:
        command = subcommand(parser, args.command)
        if isinstance(command, CommandParser):
            command.reject(extra)
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def load_modules(args: argparse.Namespace) -> None:
    """Import torch, and a task command's module, before the command runs: a KeyboardInterrupt inside torch's
    import aborts the process from native code (pybind11: "terminate called after throwing ... KeyboardInterrupt",
    exit -6) or leaves Python's "unhandled KeyboardInterrupt" mark that turns exit 130 into death by SIGINT."""
    import torch  # noqa: F401 -- loaded here, under the caller's SIGINT block

    if getattr(args, "task_spec", None) is not None:
        importlib.import_module(f"coca_video.tasks.{args.task_spec.module}")


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """Entry point of the ``coca-video`` console script; returns the exit status (:data:`EXIT_STATUSES`).

    ``exiting``: the process ends when this returns (the console script, ``python -m``, ``pipelines/``), so a
    Ctrl-C after the work is done, or a second one during the interrupted line, is ignored until the exit. An
    in-process caller (a test, a notebook) gets its own SIGINT handler back instead, and so do the processes it
    starts later (a child inherits an ignored SIGINT)."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        return run_command(argv)
    finally:
        if not exiting:
            signal.signal(signal.SIGINT, handler)


def run_command(argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run its command: one line and an exit status for a user's error or a Ctrl-C."""
    command = "coca-video"
    try:
        args = parse(argv)
        command = f"coca-video {args.command}"
        if getattr(args, "task_spec", None) is not None:
            args.cfg = task_config(args.task_spec, args, device_deferred=True)  # its errors: before torch loads
        from .video.isolate import ROOT_ENV, sigint_held  # numpy and PyAV: not for --help

        os.environ[ROOT_ENV] = str(os.getpid())  # its decoding workers and helpers end when this process does
        with sigint_held():  # a Ctrl-C meanwhile waits until the import is done, then interrupts as usual
            load_modules(args)
        args.func(args)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is done and kept: a Ctrl-C during the exit changes nothing
    except UserError as err:
        print(f"{command}: error: {err}", file=sys.stderr)
        return err.exit_status
    except BaseException as err:
        if not caused_by_ctrl_c(err):
            raise
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break this line or the clean-up
        forget_unhandled_interrupt()
        print(f"{command}: interrupted (results flushed so far are kept)", file=sys.stderr)
        return INTERRUPTED
    return 0


def forget_unhandled_interrupt() -> None:
    """Clear CPython's mark of an unhandled KeyboardInterrupt: one that passed through native code running Python
    source (pybind11's exec: ``PyRun_*``) sets it even when a caller then handles it, as ``main`` does, and at exit
    CPython then kills the process with SIGINT instead of returning 130 (seen: 3 of 12 runs with three Ctrl-Cs).
    CPython 3.10 and 3.11 export it; elsewhere this does nothing."""
    try:
        import ctypes

        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (ImportError, AttributeError, ValueError, OSError):
        pass


def caused_by_ctrl_c(err: BaseException) -> bool:
    """A KeyboardInterrupt, or an error raised while one was on its way: Python turns one inside a class body's
    ``__set_name__`` (seen during ``import torch``) into a RuntimeError whose cause is the KeyboardInterrupt."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


if __name__ == "__main__":
    sys.exit(main(exiting=True))

"""Image-text data for pretraining: tables (CSV/TSV/Parquet), WebDataset tar shards, and the synthetic world.

Every source feeds the same loop with batches ``{"images": (L, 3, S, S), "text": (L, C), "skipped": int}`` where L
is this rank's share of the global batch. The data position is the training step:
  - tables and the synthetic world are indexed: step s of a run with global batch G covers positions
    [s*G, (s+1)*G) of an endless stream of per-epoch permutations (seeded), and rank r takes its slice. So a resumed
    run sees exactly the samples a straight run would, and two ranks see exactly the halves of one rank's batch.
    Random crops draw from a generator seeded by (seed, position).
  - WebDataset shards are streamed: shards are shuffled per epoch (seeded) and dealt to (rank, worker) pairs; each
    worker yields whole batches and the loader takes workers in turn, so resuming skips each worker's consumed
    batches without decoding them.
Unreadable samples are skipped with a warning naming them, and counted in the batch's ``skipped``.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ..config import ImageTextDataConfig  # noqa: F401 -- its home is coca_video.config (torch-free)
from ..errors import DataError
from .shards import expand_braces as shard_names

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")


Transform = Callable[..., torch.Tensor]
Tokenizer = Callable[[Sequence[str]], torch.Tensor]


# -- sources -----------------------------------------------------------------------------------------------------------
class ImageTable:
    """Rows of (image path, caption) from a CSV/TSV/Parquet file; relative paths resolve against the file's folder.

    Only the two columns are held (as Arrow strings); images are read when their sample is drawn.
    """

    def __init__(self, path: str | Path, img_key: str, caption_key: str) -> None:
        import pandas as pd

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: table not found")
        try:
            if self.path.suffix == ".parquet":
                table = pd.read_parquet(self.path, columns=[img_key, caption_key])
            else:
                sep = "\t" if self.path.suffix in (".tsv", ".tab") else ","
                table = pd.read_csv(self.path, sep=sep, usecols=[img_key, caption_key], dtype=str,
                                    keep_default_na=False)
        except (ValueError, KeyError) as err:
            raise DataError(f"{self.path}: needs columns {img_key!r} and {caption_key!r} ({err})") from None
        if len(table) == 0:
            raise DataError(f"{self.path}: the table has no rows")
        self.images = table[img_key].astype("string[pyarrow]").array
        self.captions = table[caption_key].astype("string[pyarrow]").array

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, str]:
        image_path = Path(str(self.images[index]))
        if not image_path.is_absolute():
            image_path = self.path.parent / image_path
        return load_image(image_path), str(self.captions[index])


class SyntheticPairs:
    """The synthetic world's (image, caption) pairs; position i is always the same scene."""

    def __init__(self, size: int, image_size: int, seed: int, split: str = "train") -> None:
        from .synthetic import SyntheticImageText

        self.pairs = SyntheticImageText(size, size=image_size, seed=seed, split=split)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        image, caption = self.pairs[index]
        return image, caption


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except Exception as err:
        raise DataError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None


# -- indexed loading (tables, synthetic) -------------------------------------------------------------------------------
class StepBatches:
    """Batch sampler: for steps ``start_step, start_step + 1, ...`` this rank's positions and item indices."""

    def __init__(self, num_items: int, global_batch: int, rank: int, world: int, seed: int, start_step: int,
                 shuffle: bool = True) -> None:
        if global_batch % world:
            raise DataError(f"global batch {global_batch} is not divisible by {world} ranks")
        self.num_items, self.global_batch, self.local = num_items, global_batch, global_batch // world
        self.rank, self.seed, self.start_step, self.shuffle = rank, seed, start_step, shuffle
        self._epoch, self._order = -1, np.arange(0)

    def item(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_items)
        if not self.shuffle:
            return offset
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        return int(self._order[offset])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in itertools.count(self.start_step):
            first = step * self.global_batch + self.rank * self.local
            yield [(p, self.item(p)) for p in range(first, first + self.local)]


class IndexedPairs(Dataset):
    """Maps (position, index) to a transformed image and its caption.

    An unreadable sample is skipped (warning naming it) and replaced by the next readable item, so every rank's
    batch keeps its size (the contrastive all-gather needs equal shapes); the replacement is counted.
    """

    def __init__(self, source: Any, transform: Transform, seed: int, max_replacements: int = 16) -> None:
        self.source, self.transform, self.seed = source, transform, seed
        self.max_replacements = max_replacements

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, str, int]:
        position, index = key
        for skipped in range(self.max_replacements):
            try:
                image, caption = self.source[(index + skipped) % len(self.source)]
            except DataError as err:
                warnings.warn(f"skipping sample: {err}", stacklevel=1)
                continue
            generator = torch.Generator().manual_seed(hash((self.seed, position)) & 0x7FFF_FFFF)
            return self.transform(image, generator=generator), caption, skipped
        raise DataError(f"{self.max_replacements} unreadable samples in a row from index {index}: check the data")


def collate_pairs(tokenizer: Tokenizer) -> Callable[[list], dict[str, Any]]:
    def collate(samples: list[tuple[torch.Tensor, str, int]]) -> dict[str, Any]:
        images = torch.stack([image for image, _, _ in samples])
        text = tokenizer([caption for _, caption, _ in samples])
        return {"images": images, "text": text, "skipped": sum(skipped for _, _, skipped in samples)}

    return collate


# -- WebDataset --------------------------------------------------------------------------------------------------------
def expand_braces(pattern: str) -> list[str]:
    """``a{000..002}.tar`` -> a000.tar a001.tar a002.tar; ``{x,y}`` lists; several groups multiply; ``::`` joins
    (WebDataset's list separator) patterns that each expand as video shards' do (:func:`.shards.expand_braces`)."""
    return [name for part in pattern.split("::") for name in shard_names(part)]


def tar_samples(shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample of a tar shard, grouping consecutive members by key (img2dataset)."""
    with tarfile.open(shard) as archive:
        key, files = None, {}
        for member in archive:
            if not member.isfile():
                continue
            name = Path(member.name).name
            stem, _, ext = name.partition(".")
            sample_key = str(Path(member.name).parent / stem)
            if key is not None and sample_key != key:
                yield key, files
                files = {}
            key = sample_key
            files[ext.lower()] = archive.extractfile(member).read()
        if key is not None:
            yield key, files


def decode_sample(shard: str, key: str, files: dict[str, bytes]) -> tuple[Image.Image, str]:
    image_bytes = next((files[e] for e in IMAGE_SUFFIXES if e in files), None)
    if image_bytes is None:
        raise DataError(f"{shard}:{key}: no image ({', '.join(IMAGE_SUFFIXES)})")
    if "txt" in files:
        caption = files["txt"].decode("utf-8")
    elif "json" in files:
        caption = json.loads(files["json"]).get("caption")
    else:
        caption = None
    if not caption:
        raise DataError(f"{shard}:{key}: no caption (.txt, or .json with a 'caption' field)")
    try:
        with Image.open(io.BytesIO(image_bytes)) as image:
            return image.convert("RGB"), caption
    except Exception as err:
        raise DataError(f"{shard}:{key}: undecodable image ({type(err).__name__}: {err})") from None


class WebDatasetBatches(IterableDataset):
    """Endless batches from tar shards for one rank; see the module docstring for ordering and resume."""

    def __init__(self, pattern: str, transform: Transform, tokenizer: Tokenizer, local_batch: int, rank: int,
                 world: int, seed: int, start_batch: int, num_workers: int) -> None:
        self.shards = expand_braces(pattern)
        missing = [s for s in self.shards if not Path(s).is_file()]
        if missing:
            raise DataError(f"{pattern}: {len(missing)} shard(s) missing, first {missing[0]}")
        readers = world * max(num_workers, 1)
        if len(self.shards) < readers:
            raise DataError(f"{pattern}: {len(self.shards)} shards cannot feed {world} ranks x {max(num_workers, 1)} "
                            "workers; use fewer workers or more shards")
        self.transform, self.tokenizer, self.local_batch = transform, tokenizer, local_batch
        self.rank, self.world, self.seed, self.start_batch = rank, world, seed, start_batch
        self.num_workers = max(num_workers, 1)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        reader = self.rank * self.num_workers + worker
        consumed = len(range(worker, self.start_batch, self.num_workers))  # this worker's batches already used
        batches = self._batches(reader, self.world * self.num_workers)
        yield from itertools.islice(batches, consumed, None)

    def _batches(self, reader: int, readers: int) -> Iterator[dict[str, Any]]:
        images, captions, skipped, position = [], [], 0, 0
        for epoch in itertools.count():
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
            for shard in [self.shards[i] for i in order[reader::readers]]:
                for key, files in tar_samples(shard):
                    try:
                        image, caption = decode_sample(shard, key, files)
                    except DataError as err:
                        warnings.warn(f"skipping sample: {err}", stacklevel=1)
                        skipped += 1
                        continue
                    generator = torch.Generator().manual_seed(hash((self.seed, reader, position)) & 0x7FFF_FFFF)
                    position += 1
                    images.append(self.transform(image, generator=generator))
                    captions.append(caption)
                    if len(images) == self.local_batch:
                        yield {"images": torch.stack(images), "text": self.tokenizer(captions), "skipped": skipped}
                        images, captions, skipped = [], [], 0


# -- the loader --------------------------------------------------------------------------------------------------------
def build_loader(cfg: ImageTextDataConfig, transform: Transform, tokenizer: Tokenizer, global_batch: int,
                 rank: int, world: int, seed: int, start_step: int, image_size: int,
                 synthetic_split: str = "train") -> DataLoader:
    """An endless loader of this rank's batches starting at ``start_step`` (see the module docstring); the
    synthetic world's pairs come from ``synthetic_split`` (``test``: pairs training never sees)."""
    if global_batch % world:
        raise DataError(f"train.batch_size {global_batch} is not divisible by {world} ranks")
    loader_args = {"num_workers": cfg.workers, "persistent_workers": False,
                   "multiprocessing_context": "fork" if cfg.workers else None}
    if cfg.kind == "webdataset":
        if not cfg.path:
            raise DataError("data.path: a tar shard pattern is needed for kind=webdataset")
        dataset = WebDatasetBatches(cfg.path, transform, tokenizer, global_batch // world, rank, world, seed,
                                    start_step, cfg.workers)
        return DataLoader(dataset, batch_size=None, **loader_args)
    if cfg.kind == "table":
        if not cfg.path:
            raise DataError("data.path: a CSV/TSV/Parquet file is needed for kind=table")
        source: Any = ImageTable(cfg.path, cfg.img_key, cfg.caption_key)
    else:
        source = SyntheticPairs(cfg.synthetic_size, image_size, seed, synthetic_split)
    sampler = StepBatches(len(source), global_batch, rank, world, seed, start_step, shuffle=cfg.kind != "synthetic")
    return DataLoader(IndexedPairs(source, transform, seed), batch_sampler=sampler,
                      collate_fn=collate_pairs(tokenizer), **loader_args)

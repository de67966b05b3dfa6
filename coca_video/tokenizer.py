"""Tokenizers: open_clip's CLIP BPE (token-identical, faster) and a trained HF ``tokenizer.json`` for tiny models.

Both are callables ``tokenizer(list_of_str) -> LongTensor (B, context_length)`` laid out the way CoCa expects:
``[SOT, tokens..., EOT, pad, pad, ...]``; text longer than the context is cut and its last token set to EOT.
``decode``/``batch_decode`` turn generated ids back into text.
"""

from __future__ import annotations

import array
import functools
import gzip
import html
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import ftfy
import regex
import torch
from torch import Tensor

from .io import atomic_path

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
TOKENIZER_JSON = "tokenizer.json"
SOT, EOT = "<start_of_text>", "<end_of_text>"
_WHITESPACE = regex.compile(r"\s+")
_NO_MERGE = 1 << 62  # rank of a pair that is not a merge
# Characters for which ftfy.fix_text and html.unescape are the identity: printable ASCII without '&' (plus whitespace,
# which the whitespace collapse normalises anyway). Skipping ftfy for them is most of the speed-up over open_clip.
_SAFE_ASCII = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"&"} | {"\t", "\n", "\r"}


def default_bpe_path() -> Path:
    """The CLIP BPE merges file that ships inside this package (the same file open_clip ships)."""
    return Path(str(resources.files("coca_video") / "assets" / BPE_FILE))


@functools.lru_cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def clean_text(text: str) -> str:
    """open_clip's ``clean='lower'``: ftfy, double html-unescape, whitespace collapse, lowercase."""
    if not _SAFE_ASCII.issuperset(text):
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return _WHITESPACE.sub(" ", text.strip()).strip().lower()


class ClipBpeTokenizer:
    """CLIP's byte-level BPE with the exact ids of open_clip's ``SimpleTokenizer`` (vocab 49408, SOT 49406,
    EOT 49407, pad 0). ``context_length`` is 76 for CoCa."""

    pad_token_id = 0

    def __init__(self, bpe_path: str | os.PathLike | None = None, context_length: int = 76):
        self.context_length = context_length
        self.byte_encoder = _bytes_to_unicode()
        self.byte_decoder = {char: byte for byte, char in self.byte_encoder.items()}
        with gzip.open(bpe_path or default_bpe_path(), "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1:49152 - 256 - 2 + 1]
        merges = [tuple(line.split()) for line in lines]
        vocab = list(self.byte_encoder.values())
        vocab += [char + "</w>" for char in vocab]
        vocab += ["".join(merge) for merge in merges]
        vocab += [SOT, EOT]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.merge_ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.sot_token_id, self.eot_token_id = self.encoder[SOT], self.encoder[EOT]
        self.vocab_size = len(vocab)
        self._chunk_ids: dict[str, list[int]] = {}
        self._special_ids = {SOT: self.sot_token_id, EOT: self.eot_token_id}
        self._pattern = regex.compile(
            r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", regex.IGNORECASE)

    def _bpe(self, word: str) -> list[str]:
        """Merge the characters of one byte-encoded word, lowest-ranked pair first, until no pair is a merge."""
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pair = min(zip(parts, parts[1:]), key=lambda p: self.merge_ranks.get(p, _NO_MERGE))
            if pair not in self.merge_ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == pair[0] and parts[i + 1] == pair[1]:
                    merged.append(pair[0] + pair[1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def _chunk(self, chunk: str) -> list[int]:
        """Ids of one whitespace-free piece of cleaned text (cached: captions repeat their words)."""
        ids = self._chunk_ids.get(chunk)
        if ids is None:
            ids = []
            for word in self._pattern.findall(chunk):
                if word in self._special_ids:
                    ids.append(self._special_ids[word])
                    continue
                encoded = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
                ids.extend(self.encoder[piece] for piece in self._bpe(encoded))
            self._chunk_ids[chunk] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without SOT/EOT."""
        # The pattern never matches whitespace, so the text's whitespace-separated pieces tokenize independently.
        if _SAFE_ASCII.issuperset(text):
            chunks = text.lower().split()
        else:
            chunks = clean_text(text).split(" ")
        ids: list[int] = []
        cached = self._chunk_ids.get
        for chunk in chunks:
            chunk_ids = cached(chunk)
            ids += self._chunk(chunk) if chunk_ids is None else chunk_ids
        return ids

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> Tensor:
        """Tokenize to a LongTensor (B, context_length): SOT, tokens, EOT, zero padding; cut texts end in EOT."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        rows: dict[str, list[int]] = {}
        for text in texts:
            if text not in rows:
                ids = [self.sot_token_id, *self.encode(text)][:length - 1]
                rows[text] = ids + [self.eot_token_id] + [self.pad_token_id] * (length - 1 - len(ids))
        flat = array.array("q", itertools.chain.from_iterable(rows[text] for text in texts))
        return torch.frombuffer(flat, dtype=torch.long).reshape(len(texts), length).clone()

    def decode(self, ids: Iterable[int] | Tensor, skip_special_tokens: bool = True) -> str:
        """Text of one id sequence. By default SOT and padding are dropped and decoding stops at EOT; with
        ``skip_special_tokens=False`` it is open_clip's ``decode`` (every id, specials spelled out)."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        if skip_special_tokens:  # ids past this vocabulary (a model with a larger one, e.g. the paper's 64k) have no text
            ids = [i for i in _strip_specials(ids, self.sot_token_id, self.eot_token_id, self.pad_token_id)
                   if i in self.decoder]
        text = "".join(self.decoder[i] for i in ids)
        text = bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")
        return text.strip() if skip_special_tokens else text

    def batch_decode(self, ids: Tensor | Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """``decode`` for each row."""
        return [self.decode(row, skip_special_tokens) for row in ids]


def _strip_specials(ids: list[int], sot: int, eot: int, pad: int) -> list[int]:
    """The content tokens of a generated row: after a leading SOT, before the first EOT, pads dropped."""
    if ids and ids[0] == sot:
        ids = ids[1:]
    if eot in ids:
        ids = ids[:ids.index(eot)]
    return [i for i in ids if i not in (pad, sot)]


def canonical_ids(saved: dict) -> dict:
    """A trained BPE tokenizer's JSON with its ids renumbered in one order: the special tokens where they are, then
    the single characters sorted, then each merge's token in merge order. The trainer numbers the characters in the
    order of a hash map, so the same captions gave another numbering in each process (the same merges): two runs
    from the same data and seed started from different token ids."""
    model = saved["model"]
    specials = {token["content"]: token["id"] for token in saved.get("added_tokens", [])}
    merged = ["".join(pair) if isinstance(pair, list) else pair.replace(" ", "", 1) for pair in model["merges"]]
    products = set(merged)
    characters = sorted(token for token in model["vocab"] if token not in specials and token not in products)
    order = [token for token in dict.fromkeys(characters + merged) if token in model["vocab"]]
    ids = iter(sorted(set(range(len(specials) + len(order))) - set(specials.values())))
    model["vocab"] = {**specials, **{token: next(ids) for token in order}}
    return saved


class HFTokenizer:
    """A HuggingFace ``tokenizers`` file (``tokenizer.json``) with CoCa's layout: ``<pad>``=0, ``<start_of_text>``,
    ``<end_of_text>``; the tiny models trained on the synthetic world carry one."""

    SPECIALS = ("<pad>", SOT, EOT, "<unk>")

    def __init__(self, path: str | os.PathLike, context_length: int):
        from tokenizers import Tokenizer

        self.path = Path(path)
        self._tokenizer = Tokenizer.from_file(str(self.path))
        self.context_length = context_length
        ids = [self._tokenizer.token_to_id(token) for token in self.SPECIALS[:3]]
        if None in ids or ids[0] != 0:
            raise ValueError(f"{self.path}: a CoCa tokenizer.json needs <pad>=0, {SOT} and {EOT} tokens")
        self.pad_token_id, self.sot_token_id, self.eot_token_id = ids
        self.vocab_size = self._tokenizer.get_vocab_size()

    @classmethod
    def train(cls, captions: Iterable[str], vocab_size: int, path: str | os.PathLike,
              context_length: int) -> "HFTokenizer":
        """Learn a lowercase BPE vocabulary from ``captions`` and write it to ``path`` (atomically)."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.decoder = decoders.BPEDecoder(suffix="</w>")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(cls.SPECIALS),
                                      end_of_word_suffix="</w>", show_progress=False)
        tokenizer.train_from_iterator(captions, trainer)
        tokenizer = Tokenizer.from_str(json.dumps(canonical_ids(json.loads(tokenizer.to_str()))))
        with atomic_path(path) as tmp:
            tokenizer.save(str(tmp))
        return cls(path, context_length)

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without SOT/EOT."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> Tensor:
        """Tokenize to a LongTensor (B, context_length): SOT, tokens, EOT, zero padding; cut texts end in EOT."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        out = torch.full((len(texts), length), self.pad_token_id, dtype=torch.long)
        for i, encoding in enumerate(self._tokenizer.encode_batch(texts, add_special_tokens=False)):
            ids = [self.sot_token_id, *encoding.ids, self.eot_token_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_token_id
            out[i, :len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Iterable[int] | Tensor, skip_special_tokens: bool = True) -> str:
        """Text of one id sequence (by default: after SOT, up to the first EOT)."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        if skip_special_tokens:
            ids = _strip_specials(ids, self.sot_token_id, self.eot_token_id, self.pad_token_id)
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, ids: Tensor | Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """``decode`` for each row."""
        return [self.decode(row, skip_special_tokens) for row in ids]


def load_tokenizer(folder: str | os.PathLike, context_length: int) -> ClipBpeTokenizer | HFTokenizer:
    """The tokenizer stored in a checkpoint folder: its ``tokenizer.json``, else its (or our) CLIP BPE file."""
    folder = Path(folder)
    if (folder / TOKENIZER_JSON).is_file():
        return HFTokenizer(folder / TOKENIZER_JSON, context_length)
    bpe = folder / BPE_FILE
    return ClipBpeTokenizer(bpe if bpe.is_file() else None, context_length)

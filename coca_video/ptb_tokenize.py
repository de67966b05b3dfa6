"""PTB tokenization of captions for scoring, as coco-caption does it: Stanford CoreNLP 3.4.1's ``PTBTokenizer
-preserveLines -lowerCase`` (the jar pycocoevalcap ships, run with Java), then the tokens in ``PUNCTUATIONS`` removed.

Without Java (or without pycocoevalcap), :func:`python_ptb_tokenize` does the same in Python. It follows the
Stanford lexer on what captions contain -- lower case; punctuation split off words (``dog.`` -> ``dog``); clitics
(``dog's`` -> ``dog 's``, ``isn't`` -> ``is n't``, ``cannot`` -> ``can not``, ``gonna`` -> ``gon na``); curly quotes,
the ellipsis and dashes normalised; abbreviations (``mr.``, ``u.s.``, ``p.m.``, a single letter's ``c.``) keeping their
period; numbers (``3.50``, ``1,000``, ``3:30``), hyphenated words and ``cat/dog`` kept whole; brackets becoming
``-lrb-`` / ``-rrb-`` / ``-lsb-`` / ``-rsb-`` / ``-lcb-`` / ``-rcb-`` (lower-cased, so -- as in coco-caption -- not
removed as punctuation); characters outside the Basic Multilingual Plane (emoji) dropped as the lexer's
"untokenizable" -- and is checked equal to the jar's output on the tests' corpus. Known differences on rarer input:
currency symbols other than ``$`` (the lexer writes ``$``), vulgar fractions (``1/2``), ``#1`` (``# 1``), ``a<b``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-",
                          "--", "...", ";"])
"""coco-caption's tokens removed after tokenization (upper-case bracket names: never matched after -lowerCase)."""

JAVA_TOKENIZER = ("ptb-java (Stanford CoreNLP 3.4.1 PTBTokenizer -preserveLines -lowerCase, coco-caption "
                  "punctuation removed)")
PYTHON_TOKENIZER = "ptb-python (coca_video's Python equal of the PTB tokenizer, coco-caption punctuation removed)"
JAVA_TIMEOUT = 600.0  # seconds for one tokenizer run (MSR-VTT's test split: about 60,000 lines in a few seconds)


def without_punctuation(line: str) -> str:
    """One tokenizer output line with coco-caption's punctuation tokens removed (its exact rule: split on ' ')."""
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)


def one_line(text: str) -> str:
    """A caption as one input line: every line break (str.splitlines's, which Java also breaks at) a space."""
    return " ".join(text.splitlines()) if text else ""


# ---------------------------------------------------------------- the Stanford jar, through Java

def ptb_jar() -> Path | None:
    """The Stanford CoreNLP 3.4.1 jar pycocoevalcap ships, or None when pycocoevalcap is not installed."""
    try:
        import pycocoevalcap.tokenizer.ptbtokenizer as ptb
    except ImportError:
        return None
    jar = Path(ptb.__file__).with_name(ptb.STANFORD_CORENLP_3_4_1_JAR)
    return jar if jar.is_file() else None


def java_problem() -> str | None:
    """None when ``java -version`` runs here (found on the current PATH), else why not, in a few words."""
    return _java_problem_on(os.environ.get("PATH", os.defpath))


@functools.cache
def _java_problem_on(path: str) -> str | None:
    java = shutil.which("java", path=path)
    if java is None:
        return "java not found"
    try:
        done = subprocess.run([java, "-version"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"java does not run ({type(err).__name__})"
    return None if done.returncode == 0 else f"java -version exits {done.returncode}"


def java_ptb_tokenize(captions: list[str], jar: Path) -> list[str]:
    """Tokenize with the Stanford jar, exactly as pycocoevalcap's ``PTBTokenizer`` (one line per caption), except
    that the input file goes to a fresh temporary folder rather than the installed package's folder."""
    java = shutil.which("java")
    with tempfile.TemporaryDirectory(prefix="coca_video_ptb_") as tmp:
        source = Path(tmp) / "captions.txt"
        source.write_bytes("\n".join(one_line(c) for c in captions).encode())
        done = subprocess.run([java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                               "-lowerCase", str(source)], capture_output=True, timeout=JAVA_TIMEOUT)
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"the PTB tokenizer (java) exited {done.returncode}: {last[0][:200]}")
    lines = done.stdout.decode().split("\n")
    if len(lines) < len(captions):
        raise RuntimeError(f"the PTB tokenizer (java) returned {len(lines)} lines for {len(captions)} captions")
    return [without_punctuation(line) for line in lines[:len(captions)]]


# ---------------------------------------------------------------- the same in Python

ABBREVIATIONS = frozenset(
    "mr mrs ms dr st mt vs etc jr sr inc co ltd corp fig prof gen sen rep gov col lt sgt capt jan feb mar apr "
    "jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun e.g i.e a.m p.m u.s u.k d.c".split())
"""Words whose final period the lexer keeps (its abbreviation list, the part captions meet)."""
BEFORE_NUMBER = frozenset(["no", "nos", "fig", "figs", "art", "pp", "vol"])
"""Abbreviations whose period the lexer keeps only before a number (``no. 5``; a final ``No.`` is split)."""

UNICODE_MAP = {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"', "\u2018": "`",
               "\u2019": "'", "\u201a": "'", "\u2026": "...", "\u2013": "--", "\u2014": "--", "\u2015": "--",
               "\u00a0": " "}
"""Characters the lexer normalises: curly quotes, the ellipsis, en/em dashes, the no-break space."""

BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
SPECIAL_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"],
                 "wanna": ["wan", "na"], "'tis": ["'t", "is"], "'twas": ["'t", "was"]}
CLITIC = re.compile(r"^(.+?)(n't|'s|'m|'re|'ve|'ll|'d)$")
SPLIT_ANYWHERE = re.compile(r"(\.\.\.|--|[;\"()\[\]{}*+=|~^%$&])")  # split off wherever they stand
NUMBER_PUNCT = re.compile(r"(?<!\d)[,:]|[,:](?!\d)")  # , and : split except between digits (1,000  3:30)
LEADING = re.compile(r"^(``|`|'(?!(?:t|s|m|re|ve|ll|d|n)\b))")
TRAILING = re.compile(r"([!?]+|\.\.\.|\.|'')$")


def python_ptb_tokenize(caption: str) -> str:
    """One caption tokenized as the Stanford PTB lexer does with ``-lowerCase``, coco-caption's punctuation removed
    (see the module doc for what it covers)."""
    text = re.sub(r"(?<!\S)\u2019", "`", one_line(caption))  # a right quote opening a word is a quote, not 'tis
    text = "".join(UNICODE_MAP.get(ch, ch) for ch in text if ord(ch) <= 0xFFFF)
    text = re.sub(r"(?<=[a-zA-Z])`(?=[a-zA-Z])", "'", text)  # an apostrophe written as a left quote inside a word
    tokens: list[str] = []
    words = text.lower().split()
    for word, after in zip(words, [*words[1:], ""]):
        tokens += _word_tokens(word, after[:1].isdigit())
    return " ".join(t for t in tokens if t not in PUNCTUATIONS)


def _word_tokens(word: str, before_number: bool) -> list[str]:
    """The tokens of one whitespace-separated chunk (``before_number``: the next chunk starts with a digit)."""
    word = _quote_marks(word)
    out: list[str] = []
    for piece in SPLIT_ANYWHERE.split(word):
        if not piece:
            continue
        if piece in BRACKETS:
            out.append(BRACKETS[piece])
        elif SPLIT_ANYWHERE.fullmatch(piece) or piece in ("``", "''"):
            out.append(piece)
        else:
            for part in NUMBER_PUNCT.split(piece):
                out += _core_tokens(part, before_number) if part else []
        # the separators of NUMBER_PUNCT are punctuation (removed anyway), so dropping them changes nothing
    return out


def _quote_marks(word: str) -> str:
    """Double quotes as the lexer writes them: `` before a word, '' elsewhere."""
    return re.sub(r'"', lambda m: " `` " if m.start() == 0 else " '' ", word).strip().replace("  ", " ")


def _core_tokens(piece: str, before_number: bool) -> list[str]:
    """A piece with no splitting punctuation left inside: leading quotes, trailing punctuation, clitics."""
    if " " in piece:  # _quote_marks' spacing
        return [t for p in piece.split() for t in (_core_tokens(p, before_number) if p not in ("``", "''") else [p])]
    if piece in SPECIAL_WORDS:
        return list(SPECIAL_WORDS[piece])
    lead: list[str] = []
    match = LEADING.match(piece)
    while match and len(piece) > len(match.group(1)):
        lead.append(match.group(1))
        piece = piece[len(match.group(1)):]
        match = LEADING.match(piece)
    trail: list[str] = []
    while True:
        match = TRAILING.search(piece)
        if not match or match.start() == 0:
            break
        mark = match.group(1)
        if mark == "." and _keeps_period(piece, before_number):
            break
        trail.insert(0, mark)
        piece = piece[:match.start()]
    if piece.endswith("'") and len(piece) > 1 and not piece.endswith("''"):  # dogs' -> dogs '
        trail.insert(0, "'")
        piece = piece[:-1]
    return lead + _clitics(piece) + trail


def _keeps_period(piece: str, before_number: bool) -> bool:
    """True when the final period belongs to the word: an abbreviation, an initial, or letters with inner periods."""
    stem = piece[:-1]
    return (stem in ABBREVIATIONS or (before_number and stem in BEFORE_NUMBER) or bool(re.fullmatch(r"[a-z]", stem))
            or bool(re.fullmatch(r"([a-z]\.)+[a-z]", stem)))


def _clitics(piece: str) -> list[str]:
    if piece in SPECIAL_WORDS:
        return list(SPECIAL_WORDS[piece])
    match = CLITIC.match(piece)
    if match and match.group(1) not in ("'", "o"):
        stem, clitic = match.groups()
        if clitic == "n't" and stem in ("ca", "wo", "ai", "sha"):
            return [stem, clitic]  # can't -> ca n't, won't -> wo n't (the lexer's spelling)
        return [*_clitics(stem), clitic]
    return [piece] if piece else []


def ptb_tokenize(captions: list[str], use_java: bool | None = None) -> tuple[list[str], str]:
    """Tokenize ``captions`` (each one line, punctuation removed) and say how: with the Stanford jar through Java
    when it runs here and pycocoevalcap is installed (``use_java=None``, the default), else in Python. Returns the
    tokenized captions and the tokenizer's name as a result states it."""
    jar = ptb_jar()
    problem = java_problem() if jar is not None else "pycocoevalcap not installed"
    if use_java is True and problem:
        raise RuntimeError(f"the PTB tokenizer needs java and pycocoevalcap: {problem}")
    if use_java is not False and not problem:
        return java_ptb_tokenize(captions, jar), JAVA_TOKENIZER
    return [python_ptb_tokenize(c) for c in captions], PYTHON_TOKENIZER

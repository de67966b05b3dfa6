"""The CLIP BPE tokenizer gives open_clip's ids exactly; the trained tokenizer.json round-trips captions."""

import json
import random
import subprocess
import sys

import pytest
import torch

from coca_video.tokenizer import ClipBpeTokenizer, HFTokenizer, load_tokenizer

CORPUS = [
    "a photo of a cat",
    "",
    "   ",
    "A Man's DOG isn't running; they'll've gone!!",
    "Fish &amp; chips &amp;amp; peas &lt;b&gt;bold&lt;/b&gt;",
    "naïve café résumé — “quoted” ‘single’ …",
    "ﬁnancial ligature and ｆｕｌｌｗｉｄｔｈ text",
    "mojibake: The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",
    "日本語のキャプション、中文字幕和한국어 자막",
    "emoji 🎬🎥 video 👍🏽 and ZWJ 👨‍👩‍👧",
    "numbers 1234567 and 3.14159 and 1,000,000",
    "tabs\tand\nnewlines\r\nand  multiple   spaces",
    "<start_of_text> inside text <end_of_text> too",
    "control \x00\x07 chars and \u200b zero width",
    "word " * 200,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Ελληνικά, русский текст, العربية, עברית",
    "C++ & C# -- e-mail: someone@example.com, url https://x.y/z?a=1&b=2",
    "don't stop 'til you get enough",
]


@pytest.fixture(scope="module")
def tokenizers():
    from open_clip.tokenizer import SimpleTokenizer
    return ClipBpeTokenizer(context_length=76), SimpleTokenizer(context_length=76)


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz      ABCXYZ0123456789.,!?'&;-éüßñ中文🎬" + "\u00a0\u2019"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))) for _ in range(n)]


def test_ids_equal_open_clip(tokenizers):
    ours, reference = tokenizers
    texts = CORPUS + _random_texts(300, seed=0)
    assert torch.equal(ours(texts), reference(texts))


def test_layout_and_truncation(tokenizers):
    ours, _ = tokenizers
    ids = ours(["a photo of a cat", "word " * 200])
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]
    assert ids.shape == (2, 76) and ids[1, -1] == 49407 and (ids[1] != 0).all()
    assert ours.vocab_size == 49408 and ours.sot_token_id == 49406 and ours.eot_token_id == 49407


def test_decode_matches_open_clip_and_strips_specials(tokenizers):
    ours, reference = tokenizers
    for text in CORPUS[:12]:
        ids = ours([text])[0]
        assert ours.decode(ids, skip_special_tokens=False) == reference.decode(ids.tolist())
    generated = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407, 0, 0], [49406, 320, 2368, 0, 0, 0, 0, 0, 0]])
    assert ours.batch_decode(generated) == ["a photo of a cat", "a cat"]
    # a 64k-vocabulary model (the paper's coca_base) can generate ids CLIP's BPE has no text for: they are left out
    assert ours.decode([49406, 320, 63999, 2368, 49500, 49407]) == "a cat"


def test_trained_tokenizer_round_trips(tmp_path):
    captions = [f"a {size} {colour} {shape} moving {motion}" for size in ("small", "big")
                for colour in ("red", "green", "blue") for shape in ("circle", "square") for motion in ("left", "up")]
    trained = HFTokenizer.train(captions * 5, vocab_size=80, path=tmp_path / "tokenizer.json", context_length=12)
    loaded = load_tokenizer(tmp_path, context_length=12)
    assert isinstance(loaded, HFTokenizer)
    ids = loaded(["A Small RED circle moving left", "a big blue square moving up " * 3])
    assert ids.shape == (2, 12) and ids[0, 0] == loaded.sot_token_id == 1 and ids[1, -1] == loaded.eot_token_id == 2
    assert loaded.batch_decode(ids)[0] == "a small red circle moving left"
    assert torch.equal(ids, trained(["A Small RED circle moving left", "a big blue square moving up " * 3]))


def test_training_twice_on_the_same_captions_gives_the_same_tokenizer(tmp_path):
    """The trainer numbers single characters in a hash map's order (another one per call and process); the saved ids
    are renumbered canonically, so two runs from the same data start from the same token ids. In fresh processes
    (the hash seed differs per process), as two pretraining runs would."""
    code = ("import sys; from coca_video.tokenizer import HFTokenizer; "
            "caps = [f'a {c} {s} near a {t}' for c in ('red','teal','gold') for s in ('cube','disc') "
            "for t in ('dog','tree','cat')]; HFTokenizer.train(caps * 3, 120, sys.argv[1], 16)")
    files = [tmp_path / f"tokenizer{i}.json" for i in range(3)]
    for path in files:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    assert files[0].read_text() == files[1].read_text() == files[2].read_text()
    vocab = json.loads(files[0].read_text())["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(len(vocab)))  # dense ids, the specials first
    assert [vocab[token] for token in HFTokenizer.SPECIALS] == [0, 1, 2, 3]


def test_folder_without_tokenizer_json_uses_clip_bpe(tmp_path):
    assert isinstance(load_tokenizer(tmp_path, context_length=76), ClipBpeTokenizer)

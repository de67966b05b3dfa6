"""Same numbers as open_clip 3.3.0 on the same (random) weights, loaded from files both libraries read."""

from __future__ import annotations

import pytest
import torch

from helpers import EOT, OURS_TINY, SOT, open_clip_tiny, randomize_

import coca_video
from coca_video.config import from_dict
from coca_video.model import CoCaConfig

def sample_text(batch: int, seed: int) -> torch.Tensor:
    """Token ids padded to 76 with varied lengths, one row full length (so the CLS sees itself)."""
    gen = torch.Generator().manual_seed(seed)
    text = torch.zeros(batch, 76, dtype=torch.long)
    for row in range(batch):
        n = 76 if row == 0 else int(torch.randint(3, 40, (1,), generator=gen))
        text[row, :n] = torch.randint(1, 49000, (n,), generator=gen)
        text[row, 0], text[row, n - 1] = SOT, EOT
    return text


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    ref = open_clip_tiny(pytest.importorskip("open_clip"), seed=1)
    path = tmp_path_factory.mktemp("openclip") / "open_clip_pytorch_model.bin"
    torch.save(ref.state_dict(), path)
    ours = coca_video.CoCa(from_dict(CoCaConfig, OURS_TINY))
    coca_video.load_weights(ours, path)
    return ref, ours.eval()


def compare(ref, ours, images, text, atol=1e-4):
    with torch.no_grad():
        ref_out = ref(images, text)
        out = ours(images, text)
        torch.testing.assert_close(ours.encode_image(images), ref.encode_image(images), atol=atol, rtol=0)
        torch.testing.assert_close(ours.encode_text(text), ref.encode_text(text), atol=atol, rtol=0)
    torch.testing.assert_close(out.image_latent, ref_out["image_features"], atol=atol, rtol=0)
    torch.testing.assert_close(out.text_latent, ref_out["text_features"], atol=atol, rtol=0)
    torch.testing.assert_close(out.caption_logits, ref_out["logits"], atol=atol, rtol=0)
    torch.testing.assert_close(out.caption_labels, ref_out["labels"])
    torch.testing.assert_close(out.logit_scale, ref_out["logit_scale"])


def test_tiny_outputs_match_open_clip(tiny_pair):
    ref, ours = tiny_pair
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    compare(ref, ours, images, sample_text(3, 3))


def test_short_unpadded_prefix_matches_open_clip(tiny_pair):
    """Texts shorter than the context (CLS at position L) go through the same shifted-mask logic."""
    ref, ours = tiny_pair
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    compare(ref, ours, images, sample_text(2, 5)[:, :12])


def test_greedy_captions_match_open_clip_token_for_token(tiny_pair):
    ref, ours = tiny_pair
    with torch.no_grad():  # make EOT likely after a few tokens so rows finish at different steps
        ref.text_decoder.text_projection[:, EOT] += 0.6 * ref.text_decoder.text_projection[:, EOT].sign()
        ours.caption_head.weight.copy_(ref.text_decoder.text_projection.T)
    images = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    expected = ref.generate(images, generation_type="top_k", top_k=1, seq_len=20)
    got = ours.generate(images, method="greedy", max_len=20)
    assert got[:, 0].eq(SOT).all()
    torch.testing.assert_close(got, expected)


@pytest.mark.slow
def test_full_size_coca_vit_b32_matches_open_clip(tmp_path):
    """The real architecture (253.6M parameters), saved as safetensors with a DDP-style prefix and wrapper."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    ref = open_clip.create_model("coca_ViT-B-32").eval()
    randomize_(ref, 7)
    from safetensors.torch import save_file

    path = tmp_path / "open_clip_model.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = coca_video.create_model("coca_ViT-B-32", pretrained=str(path))
    assert sum(p.numel() for p in ours.parameters()) == 253_560_065
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    compare(ref, ours, images, sample_text(2, 9))

"""The paper's CoCa-Base and CoCa-Large (Table 1) at the paper's sizes, and the one-feed-forward multimodal layer
that gives them. Counted on the meta device: nothing is allocated, so the 800M-parameter model costs no memory."""

import json

import pytest
import torch

from coca_video.cli import main
from coca_video.model import CoCa
from coca_video.model.factory import PAPER_SIZES, get_model_config, parameter_counts
from coca_video.model.text_decoder import MultimodalLayer
from tests.helpers import tiny_config

TABLE_1 = {  # Yu et al. 2022, Table 1, typed from the paper: (image encoder, text decoder, total) in millions
    "coca_base": (86, 297, 383),
    "coca_large": (303, 484, 787),
}


@pytest.mark.parametrize("name", sorted(TABLE_1))
def test_paper_configs_have_table_1s_parameter_counts_within_1_percent(name):
    encoder, decoder, total = (m * 1e6 for m in TABLE_1[name])
    counts = parameter_counts(get_model_config(name))
    assert counts["encoder"] == pytest.approx(encoder, rel=0.01)
    assert counts["decoder"] == pytest.approx(decoder, rel=0.01)
    assert counts["encoder"] + counts["decoder"] == pytest.approx(total, rel=0.01)
    # Table 1 counts neither the poolers nor anything else: they are the whole rest of the model
    assert counts["total"] == counts["encoder"] + counts["decoder"] + counts["poolers"] + 1  # + the logit scale


def test_coca_base_decoder_count_is_the_closed_form_of_its_layout():
    """12 unimodal layers (attention + MLP), 12 multimodal layers (self-attention, cross-attention, one MLP), 64k
    token embedding and an untied 64k output head, width 768, MLP 3072: the sum by hand."""
    d, f, vocab, context = 768, 3072, 64000, 76
    norm, attn, mlp = 2 * d, 4 * d * d + 4 * d, 2 * d * f + f + d
    unimodal = 12 * (2 * norm + attn + mlp)
    multimodal = 12 * (norm + attn + 2 * norm + attn + norm + mlp)  # self: norm1; cross: norm1, norm_context, norm2
    text_extras = vocab * d + (context + 1) * d + d + norm + d * d  # embeddings, positions (+CLS), CLS, final LN, proj
    expected = unimodal + text_extras + multimodal + norm + vocab * d  # + the decoder's final LN and the output head
    assert parameter_counts(get_model_config("coca_base"))["decoder"] == expected


def test_models_command_prints_table_1_next_to_our_counts(capsys):
    assert main(["models", "--json"]) == 0
    records = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    for name, (encoder, decoder, total) in TABLE_1.items():
        assert records[name]["paper"] == {"encoder": encoder * 10**6, "decoder": decoder * 10**6,
                                          "total": total * 10**6} == PAPER_SIZES[name]
        assert records[name]["parameters"] == records[name]["counts"]["total"]
    assert records["coca_ViT-B-32"]["paper"] is None
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("coca_large "))
    assert "787 M (303 + 484)" in row and "303.6 + 484.9 + 9.7" in row


def test_one_feed_forward_layer_is_self_attention_then_cross_attention_then_one_mlp():
    """feed_forwards=1: the self-attention block adds no MLP; the layer equals the two residual steps by hand."""
    torch.manual_seed(0)
    layer = MultimodalLayer(32, 4, 4.0, feed_forwards=1).eval()
    assert layer.self_block.mlp is None and layer.cross_block.mlp is not None
    x, image = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    kv = layer.cross_block.project_context(image)
    sb, cb = layer.self_block, layer.cross_block
    h = x + sb.attn(sb.norm1(x))  # causal self-attention, no MLP
    h = h + cb.attn(cb.norm1(h), kv)
    expected = h + cb.mlp(cb.norm2(h))
    torch.testing.assert_close(layer(x, kv), expected)
    two = MultimodalLayer(32, 4, 4.0)  # open_clip's layout keeps its MLP after the self-attention
    assert sum(p.numel() for p in two.parameters()) - sum(p.numel() for p in layer.parameters()) == \
        sum(p.numel() for p in two.self_block.mlp.parameters()) + 2 * 32


@torch.no_grad()
def test_one_feed_forward_decoder_caches_as_it_runs_whole():
    """Incremental decoding (the KV caches generation uses) gives the full forward's logits with one MLP a layer."""
    torch.manual_seed(0)
    model = CoCa(tiny_config(decoder={"feed_forwards": 1})).eval()
    images, ids = torch.randn(2, 3, 64, 64), torch.randint(1, 400, (2, 6))
    image_tokens = model.image_features(images).tokens
    full = model.caption_logits(image_tokens, model.text(ids).token_states)  # (B, L, V)
    decoding = model.start_decoding(image_tokens)
    steps = [decoding.next_logits(ids[:, :3])] + [decoding.next_logits(ids[:, i:i + 1]) for i in range(3, 6)]
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 2:].float(), atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_one_feed_forward_checkpoint_reloads_with_its_layout(tmp_path):
    """A saved feed_forwards=1 model comes back with that layout (config.json) and the same captions' logits."""
    import coca_video

    torch.manual_seed(0)
    model = CoCa(tiny_config(decoder={"feed_forwards": 1})).eval()
    folder = coca_video.save_pretrained(model, tmp_path / "ckpt")
    loaded = coca_video.create_model(str(folder))
    assert loaded.cfg.decoder.feed_forwards == 1 and loaded.decoder.layers[0].self_block.mlp is None
    images, ids = torch.randn(1, 3, 64, 64), torch.randint(1, 400, (1, 5))
    expected = model.caption_logits(model.image_features(images).tokens, model.text(ids).token_states)
    got = loaded.caption_logits(loaded.image_features(images).tokens, loaded.text(ids).token_states)
    torch.testing.assert_close(got, expected)

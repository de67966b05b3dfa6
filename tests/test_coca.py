"""Model behaviour: shapes, masking, layouts, gradients, checkpointing, init, video encoding."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config

import coca_video
from coca_video.model import CoCaLoss


def text_ids(batch: int, length: int, seed: int = 0, pad_from: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 1000, (batch, length), generator=gen)
    ids[:, 0] = 49406
    if pad_from is not None:
        ids[:, pad_from] = 49407
        ids[:, pad_from + 1 :] = 0
    return ids


def test_forward_shapes_and_normalised_latents(tiny_model):
    images = torch.randn(3, 3, 64, 64)
    out = tiny_model(images, text_ids(3, 20))
    assert out.image_latent.shape == out.text_latent.shape == (3, 64)
    assert out.caption_logits.shape == (3, 19, 49408)
    torch.testing.assert_close(out.image_latent.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.text_latent.norm(dim=-1), torch.ones(3))
    assert out.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_logit_scale_is_clamped_at_100(tiny_model):
    with torch.no_grad():
        tiny_model.logit_scale.fill_(10.0)
    assert tiny_model.scaled_logit_scale().item() == pytest.approx(100.0)


def test_caption_logits_are_causal(tiny_model):
    """Changing token k changes no logit at positions < k (each position predicts the next token)."""
    images = torch.randn(1, 3, 64, 64)
    ids = text_ids(1, 16, seed=1)
    changed = ids.clone()
    changed[0, 9] = 77
    with torch.no_grad():
        a, b = tiny_model(images, ids).caption_logits, tiny_model(images, changed).caption_logits
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize(
    "pad_mask, key_valid",
    [("shifted", [1, 1, 1, 1, 0, 0]),  # open_clip: [True] + (ids != pad): the CLS sees the first pad, not itself
     ("aligned", [1, 1, 1, 0, 0, 1])],  # (ids != pad) + [True]: exactly the real tokens and the CLS itself
)
def test_attention_mask_by_hand(pad_mask, key_valid):
    model = coca_video.CoCa(tiny_config(text={"pad_mask": pad_mask}))
    ids = torch.tensor([[49406, 320, 49407, 0, 0]])
    mask = model.text.attention_mask(ids)[0, 0].int()  # (6, 6): 5 tokens + CLS
    causal = torch.tril(torch.ones(6, 6, dtype=torch.int))
    assert mask.tolist() == (causal * torch.tensor(key_valid)).tolist()


def test_pad_content_is_invisible_to_the_cls(tiny_model):
    """Aligned mask: the embedding of a padded text does not change when we change what the pads hide behind
    them, but does when the same positions hold real tokens."""
    ids = text_ids(1, 20, seed=3, pad_from=8)
    with torch.no_grad():
        base = tiny_model.encode_text(ids)
        filled = ids.clone()
        filled[0, 9:] = 5  # no longer pad: now visible to the CLS
        assert not torch.allclose(base, tiny_model.encode_text(filled))
        tiny_model.text.token_embedding.weight[0] += 1.0  # the pad row itself: masked everywhere it matters
        torch.testing.assert_close(tiny_model.encode_text(ids), base)


@pytest.mark.parametrize("layout", ["openclip", "cascade", "parallel"])
def test_pooler_layouts(layout):
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config(pooler={"layout": layout})).eval()
    pooled = model.image_features(torch.randn(2, 3, 64, 64))
    queries = model.cfg.pooler.n_queries
    assert pooled.embedding.shape == (2, 64)
    assert pooled.tokens.shape == (2, queries - 1 if layout == "openclip" else queries, 64)
    has_contrastive = model.image_pooling.contrastive_pool is not None
    assert has_contrastive == (layout != "openclip")


def test_cascade_embedding_depends_only_on_generative_tokens():
    """Cascade: the contrastive query reads the generative pooler's outputs only, so two different images whose
    generative tokens are forced equal get the same embedding; parallel reads the encoder tokens, so theirs differ."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    for layout, same in (("cascade", True), ("parallel", False)):
        model = coca_video.CoCa(tiny_config(pooler={"layout": layout})).eval()
        fixed = torch.randn(1, model.cfg.pooler.n_queries, model.cfg.embed_dim)
        model.image_pooling.generative_pool.register_forward_hook(lambda module, args, out: fixed.expand_as(out))
        with torch.no_grad():
            first, second = model.encode_image(images)
        assert torch.allclose(first, second, atol=1e-6) == same, layout


@pytest.mark.slow
def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    for layout in ("openclip", "cascade"):
        model = coca_video.CoCa(tiny_config(pooler={"layout": layout}))
        losses = CoCaLoss(pad_id=0)(model(torch.randn(2, 3, 64, 64), text_ids(2, 12, pad_from=8)))
        losses["loss"].backward()
        no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        # token rows never used get zero grad; the embedding as a whole must have some
        assert no_grad == [], no_grad


def test_tied_head_uses_the_token_embedding():
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config(decoder={"tied_head": True}))
    assert model.caption_head is None
    assert not any(k.startswith("caption_head") for k in model.state_dict())
    hidden = torch.randn(1, 3, 64)
    expected = hidden @ model.text.token_embedding.weight.T
    torch.testing.assert_close(model.vocab_logits(hidden), expected)


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config()).train()
    images, ids = torch.randn(2, 3, 64, 64), text_ids(2, 12, pad_from=9)

    def run():
        model.zero_grad()
        loss = CoCaLoss(pad_id=0)(model(images, ids))["loss"]
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_loss, plain_grads = run()
    model.set_grad_checkpointing(True)
    ckpt_loss, ckpt_grads = run()
    torch.testing.assert_close(ckpt_loss, plain_loss)
    for name in plain_grads:
        torch.testing.assert_close(ckpt_grads[name], plain_grads[name], msg=name)


def test_no_parameter_is_left_uninitialised():
    """open_clip leaves its decoder head as torch.empty; every tensor here is drawn or set on purpose."""
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config())
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
        if name.endswith("bias"):
            continue
        if param.ndim > 0 and "norm" not in name:
            assert param.std() > 1e-4, f"{name} looks uninitialised"
            assert param.abs().max() < 10, f"{name} looks like garbage memory"


def test_encode_video_equals_frame_by_frame_encode_image(tiny_model):
    frames = torch.randn(2, 5, 3, 64, 64)
    with torch.no_grad():
        video = tiny_model.encode_video(frames, max_frames_per_forward=3)
        per_frame = tiny_model.encode_image(frames.flatten(0, 1)).view(2, 5, -1)
        tokens = tiny_model.image_encoder(frames.flatten(0, 1))
    torch.testing.assert_close(video.frame_embeddings, per_frame, atol=1e-5, rtol=0)
    mean = per_frame.mean(dim=1)
    torch.testing.assert_close(video.video_embedding, mean / mean.norm(dim=-1, keepdim=True), atol=1e-5, rtol=0)
    assert video.tokens.shape == (2, 5 * tokens.shape[1], 96)
    torch.testing.assert_close(video.tokens.view(10, -1, 96), tokens, atol=1e-5, rtol=0)


def test_text_longer_than_context_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="at most 76"):
        tiny_model.encode_text(torch.ones(1, 77, dtype=torch.long))


@pytest.mark.parametrize("layout", ["openclip", "cascade"])
def test_attentional_video_pooling_of_one_frame_is_the_image_embedding(layout):
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config(pooler={"layout": layout})).eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        video = model.encode_video(images[:, None], pooling="attentional").video_embedding
        torch.testing.assert_close(video, model.encode_image(images), atol=1e-6, rtol=0)
        mean = model.encode_video(images[:, None], pooling="mean").video_embedding
        torch.testing.assert_close(mean, model.encode_image(images), atol=1e-6, rtol=0)


def test_attentional_video_pooling_over_all_tokens_matches_a_hand_written_pooler():
    """openclip layout: query 0 of the pooler attends over the T*N tokens of all frames at once; written out here
    with explicit LayerNorms, head split and softmax, then ln_post and the projection, as for one image."""
    torch.manual_seed(0)
    model = coca_video.CoCa(tiny_config()).eval()
    frames = torch.randn(2, 3, 3, 64, 64)  # (B, T, 3, H, W)
    with torch.no_grad():
        encoding = model.encode_video(frames, pooling="attentional")
        tokens = torch.stack([model.image_encoder(clip) for clip in frames]).flatten(1, 2)  # (B, T*N, C)
        torch.testing.assert_close(encoding.tokens, tokens, atol=1e-5, rtol=0)
        pool = model.image_pooling.generative_pool
        ln = torch.nn.functional.layer_norm
        query = ln(pool.query[:1], (pool.query.shape[1],), pool.norm_query.weight, pool.norm_query.bias, 1e-5)
        context = ln(tokens, (tokens.shape[-1],), pool.norm_context.weight, pool.norm_context.bias, 1e-5)
        q = query @ pool.attn.q.weight.T + pool.attn.q.bias  # (1, D)
        k, v = (context @ pool.attn.kv.weight.T + pool.attn.kv.bias).chunk(2, dim=-1)  # (B, T*N, D) each
        heads, width = pool.attn.heads, q.shape[-1]
        d = width // heads
        out = []
        for h in range(heads):
            scores = (k[..., h * d:(h + 1) * d] @ q[0, h * d:(h + 1) * d]) / d ** 0.5  # (B, T*N)
            out.append((scores.softmax(-1)[..., None] * v[..., h * d:(h + 1) * d]).sum(1))  # (B, d)
        pooled = torch.cat(out, -1) @ pool.attn.proj.weight.T + pool.attn.proj.bias
        post = model.image_pooling.norm
        embedding = ln(pooled, (width,), post.weight, post.bias, 1e-5) @ model.image_pooling.proj.weight.T
        expected = torch.nn.functional.normalize(embedding, dim=-1)
    torch.testing.assert_close(encoding.video_embedding, expected, atol=1e-5, rtol=0)
    mean = torch.nn.functional.normalize(encoding.frame_embeddings.mean(1), dim=-1)
    assert not torch.allclose(expected, mean, atol=1e-3)  # a different representation from the paper's mean


@pytest.mark.slow
def test_all_frames_caption_input_reads_every_frame(tiny_model):
    """Attention over T copies of one frame's tokens gives each copy 1/T of the weight of the same values: the
    pooled tokens (so the caption) equal that frame's. Different frames give tokens unlike either frame's."""
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = tiny_model.image_encoder(images)  # (2, N, C)
        torch.testing.assert_close(tiny_model.generate_from_tokens(tokens, method="greedy", max_len=8),
                                   tiny_model.generate(images, method="greedy", max_len=8))
        repeated = tokens[:1].repeat(1, 4, 1)  # a 4-frame clip of the same frame
        torch.testing.assert_close(tiny_model.image_pooling(repeated).tokens,
                                   tiny_model.image_pooling(tokens[:1]).tokens, atol=1e-5, rtol=0)
        mixed = tiny_model.image_pooling(tokens.flatten(0, 1)[None]).tokens  # a clip of both frames
        for frame in range(2):
            assert not torch.allclose(mixed, tiny_model.image_pooling(tokens[frame:frame + 1]).tokens, atol=1e-3)


def test_the_vit_trunk_is_timms_draw_for_draw_and_value_for_value():
    """Ours (written without timm, whose import takes torchvision with it) against timm's VisionTransformer with
    CLIP's settings: from the same seed, the same parameters under the same names, and the same tokens."""
    import functools

    from timm.models.vision_transformer import VisionTransformer as TimmViT

    from coca_video.model.config import VisionConfig
    from coca_video.model.layers import LN_EPS
    from coca_video.model.vit import VisionTransformer

    cfg = VisionConfig(image_size=32, patch_size=8, width=64, layers=3, heads=4, mlp_ratio=4.0)
    torch.manual_seed(3)
    ours = VisionTransformer(cfg)
    torch.manual_seed(3)
    theirs = TimmViT(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4, mlp_ratio=4.0, pre_norm=True,
                     final_norm=False, global_pool="", num_classes=0, act_layer=torch.nn.GELU,
                     norm_layer=functools.partial(torch.nn.LayerNorm, eps=LN_EPS))
    mine, timms = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(timms)
    for key, value in timms.items():
        assert torch.equal(mine[key], value), key
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(images), theirs.forward_features(images))

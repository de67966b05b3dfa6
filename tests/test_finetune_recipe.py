"""Finetuning's recipe, each piece against an independent answer: one crop box and flip per clip within the
configured bounds, drawn reproducibly whatever the worker count; soft-target cross-entropy by hand; layer-wise LR
decay in closed form; k micro-batches stepping exactly like their union."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from coca_video import get_model_config
from coca_video.data.video import ClipSampling, VideoClipDataset, VideoItem, video_loader
from coca_video.model import VideoClassifier, VideoClassifierConfig
from coca_video.model.vit import ImageEncoder
from coca_video.tasks.probe.config import ProbeOptimConfig
from coca_video.tasks.probe.train import EncoderAndClassifier, finetune_lr_scale, layer_decay_scale, mix_clips
from coca_video.training import Batch, Optimisation, OptimConfig, TrainTask, WeightEma, build_optimizer, \
    build_scheduler, classification_loss_sum, optimiser_step, soft_targets
from coca_video.transforms import ClipAugmentConfig, clip_train_transform, sample_crop_box
from coca_video.video import write_video

TINY = get_model_config("tiny")


def textured_clip(frames: int = 4, height: int = 48, width: int = 80) -> torch.Tensor:
    """(T, H, W, 3) uint8: one smooth, asymmetric picture, frame t brighter by 10 * t (values stay in 40..200,
    so resampling never clips and the brightness steps survive it exactly)."""
    y, x = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    picture = 40 + 100 * np.stack([x**2, y * x, 0.5 * (1 - y) + 0.3 * x], -1)  # (H, W, 3) in 40..140
    return torch.from_numpy(np.stack([picture + 10 * t for t in range(frames)]).round().astype(np.uint8))


def test_one_crop_box_and_flip_per_clip_as_resized_crop_of_the_sampled_box():
    transform = clip_train_transform(TINY, ClipAugmentConfig())
    clip = textured_clip()
    flips = set()
    for seed in range(8):
        out = transform.frame_crops(clip, 1, np.random.default_rng(seed))[0]  # (T, 3, S, S)
        draw = np.random.default_rng(seed)  # the same draws, replayed: the box, then the flip
        top, left, h, w = sample_crop_box(48, 80, (0.25, 1.0), (0.75, 1.3333), draw)
        flipped = draw.uniform() < 0.5
        flips.add(flipped)
        expected = TF.resized_crop(clip[0].permute(2, 0, 1), top, left, h, w, [TINY.vision.image_size] * 2,
                                   interpolation=InterpolationMode(transform.interpolation), antialias=True)
        expected = expected.flip(-1) if flipped else expected
        torch.testing.assert_close(out[0], (expected[None].float() / 255 - transform.mean)[0] / transform.std[0])
        for t in range(1, 4):  # every frame cut and flipped alike: only the brightness step remains (up to
            # one uint8 level where the resampler's fixed-point rounding tips the other way, on a few pixels)
            off = (out[t] - out[0] - 10 * t / 255 / transform.std[0]).abs()
            assert off.max() <= 1 / 255 / transform.std.min() + 1e-5 and (off > 1e-5).float().mean() < 0.01
    assert flips == {True, False}


def test_flip_off_never_flips():
    on, off = (clip_train_transform(TINY, ClipAugmentConfig(scale=(1.0, 1.0), ratio=(0.6, 0.6), flip=flip))
               for flip in (True, False))  # the whole 48x80 frame: the box is fixed, only the flip can vary
    clip = textured_clip()
    unflipped = off.frame_crops(clip, 1, np.random.default_rng(0))
    for seed in range(6):
        torch.testing.assert_close(off.frame_crops(clip, 1, np.random.default_rng(seed)), unflipped)
    assert any(not torch.equal(on.frame_crops(clip, 1, np.random.default_rng(s)), unflipped) for s in range(6))


@pytest.mark.parametrize("height,width,largest", [(1000, 1000, 0.8), (600, 1400, 600 * 800 / (600 * 1400))])
def test_crop_box_stays_within_the_scale_and_ratio_bounds(height, width, largest):
    rng = np.random.default_rng(0)
    scale, ratio = (0.25, 0.8), (0.75, 4 / 3)
    shares, aspects = [], []
    for _ in range(500):
        top, left, h, w = sample_crop_box(height, width, scale, ratio, rng)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        shares.append(h * w / (height * width))
        aspects.append(w / h)
    # rounding each side to whole pixels moves the share and aspect by at most ~1 / side (< 0.5% here)
    assert scale[0] * 0.99 <= min(shares) and max(shares) <= scale[1] * 1.01
    assert ratio[0] * 0.99 <= min(aspects) and max(aspects) <= ratio[1] * 1.01
    # it spans the range, up to the largest box that fits (600 high at most 4/3 wide: 800 of 1400)
    assert min(shares) < 0.27 and max(shares) > largest - 0.03


@pytest.fixture(scope="module")
def textured_videos(tmp_path_factory) -> list[VideoItem]:
    root = tmp_path_factory.mktemp("textured")
    for i in range(4):
        write_video(root / f"v{i}.mp4", textured_clip(12, 64, 96).numpy(), fps=25)
    return [VideoItem(str(p), label=i) for i, p in enumerate(sorted(root.glob("*.mp4")))]


def test_augmented_training_clips_do_not_depend_on_the_worker_count(textured_videos):
    transform = clip_train_transform(TINY, ClipAugmentConfig())
    dataset = VideoClipDataset(textured_videos, transform, ClipSampling(4, mode="train"), seed=5)
    dataset.set_epoch(2)
    by_workers = [torch.cat([b.frames for b in video_loader(dataset, 2, workers=w)]) for w in (0, 2)]
    torch.testing.assert_close(by_workers[0], by_workers[1], atol=0, rtol=0)
    dataset.set_epoch(3)
    assert not torch.equal(torch.cat([b.frames for b in video_loader(dataset, 2, workers=0)]), by_workers[0])


def test_temporal_jitter_off_trains_on_the_evaluations_frames(textured_videos):
    """The textured clips brighten by 10 a frame, so a clip's brightness tells which frames were taken: with
    ``temporal_jitter: false`` every epoch takes the evaluation's (segment centres); with it on, TSN draws others."""
    from coca_video.config import load_config
    from coca_video.tasks.probe import ProbeConfig
    from coca_video.tasks.probe.train import finetune_sampling

    transform = clip_train_transform(TINY, ClipAugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False))

    def frames(sampling: ClipSampling, epoch: int) -> torch.Tensor:
        dataset = VideoClipDataset(textured_videos, transform, sampling, seed=5)
        dataset.set_epoch(epoch)
        return torch.cat([b.frames for b in video_loader(dataset, 4, workers=0)])

    evaluation = frames(ClipSampling(4, mode="eval"), 0)
    configs = {jitter: load_config(ProbeConfig, None, ["decode.num_frames=4", f"probe.augment.temporal_jitter={jitter}"])
               for jitter in (True, False)}
    for epoch in (1, 2):
        torch.testing.assert_close(frames(finetune_sampling(configs[False]), epoch), evaluation, atol=0, rtol=0)
    assert not torch.equal(frames(finetune_sampling(configs[True]), 1), evaluation)


def test_soft_target_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    targets = soft_targets(torch.tensor([0, 2]), 3, label_smoothing=0.3)  # rows: (0.8, 0.1, 0.1), (0.1, 0.1, 0.8)
    torch.testing.assert_close(targets, torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]))
    lse0, lse1 = math.log(math.e**2 + 1 + math.e**-1), math.log(2 * math.e**0.5 + math.e)
    by_hand = (0.8 * (lse0 - 2) + 0.1 * lse0 + 0.1 * (lse0 + 1)) + (0.2 * (lse1 - 0.5) + 0.8 * (lse1 - 1))
    assert classification_loss_sum(logits, targets).item() == pytest.approx(by_hand, rel=1e-6)
    # the integer path with the same smoothing gives the same number (it is how torch smooths)
    assert classification_loss_sum(logits, torch.tensor([0, 2]), 0.3).item() == pytest.approx(by_hand, rel=1e-6)


def test_mixup_mixes_each_clip_with_its_mirror_by_one_share():
    clips = torch.arange(3.0).view(3, 1, 1, 1, 1).expand(3, 2, 3, 4, 4)  # clip b is all b
    targets = soft_targets(torch.tensor([0, 1, 2]), 3)
    mixed, mixed_targets = mix_clips(clips, targets, mixup=1.0, cutmix=0.0, rng=np.random.default_rng(0))
    share = float(np.random.default_rng(0).beta(1.0, 1.0))
    torch.testing.assert_close(mixed[:, 0, 0, 0, 0], torch.tensor([2 * (1 - share), 1.0, 2 * share]))
    torch.testing.assert_close(mixed_targets[0], torch.tensor([share, 0.0, 1 - share]))
    cut, cut_targets = mix_clips(clips, targets, mixup=0.0, cutmix=1.0, rng=np.random.default_rng(1))
    pasted = (cut[0] == 2).float().mean().item()  # clip 0 got a box of clip 2, the same in every frame
    assert torch.equal(cut[0, 0], cut[0, 1]) and cut_targets[0].tolist() == pytest.approx([1 - pasted, 0, pasted])


def encoder_and_classifier(layers: int = 3) -> EncoderAndClassifier:
    torch.manual_seed(0)
    vision = TINY.vision.__class__(image_size=16, patch_size=8, width=16, layers=layers, heads=2)
    encoder = ImageEncoder(vision)
    classifier = VideoClassifier(VideoClassifierConfig(16, 4, 2, 2, encoder.num_tokens))
    return EncoderAndClassifier({"encoder": encoder, "classifier": classifier})


def test_layer_decay_learning_rates_closed_form():
    model = encoder_and_classifier(layers=3)
    cfg = ProbeOptimConfig(lr=1e-3, layer_decay=0.5)
    optimizer = build_optimizer(model, cfg, layer_decay_scale(3, 0.5))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    expected = {"encoder.vit.patch_embed.proj.weight": 0.5**4, "encoder.vit.pos_embed": 0.5**4,
                "encoder.vit.cls_token": 0.5**4, "encoder.vit.norm_pre.weight": 0.5**4,
                "encoder.vit.blocks.0.attn.qkv.weight": 0.5**3, "encoder.vit.blocks.1.mlp.fc2.bias": 0.5**2,
                "encoder.vit.blocks.2.norm1.weight": 0.5**1, "classifier.head.weight": 1.0}
    params = dict(model.named_parameters())
    for name, factor in expected.items():
        assert lr_of[id(params[name])] == pytest.approx(1e-3 * factor), name
    for name, param in params.items():  # every other parameter: its block's factor, or the embeddings', or 1
        block = re.match(r"encoder\.vit\.blocks\.(\d)\.", name)
        factor = 0.5 ** (3 - int(block[1])) if block else 0.5**4 if name.startswith("encoder.") else 1.0
        assert lr_of[id(param)] == pytest.approx(1e-3 * factor), name
    scheduler = build_scheduler(optimizer, OptimConfig(warmup_steps=2), max_steps=10)  # the schedule scales each
    optimizer.step()
    scheduler.step()
    assert lr_of[id(params["encoder.vit.pos_embed"])] * 1.0 == pytest.approx(
        [g["lr"] for g in optimizer.param_groups if any(p is params["encoder.vit.pos_embed"] for p in g["params"])][0])


@pytest.mark.parametrize("layer_decay", [1.0, 0.5])
def test_head_lr_trains_every_new_module_at_its_own_rate(layer_decay):
    """optim.head_lr: the pooler (query, norms, attention), the position embeddings and the classifier at head_lr;
    the encoder at lr (times its layer decay); every trainable parameter in exactly one group."""
    model = encoder_and_classifier(layers=3)
    model["classifier"] = VideoClassifier(VideoClassifierConfig(16, 4, 2, 2, model["encoder"].num_tokens,
                                                                temporal_pos_embed=True, spatial_pos_embed=True))
    cfg = ProbeOptimConfig(lr=1e-4, head_lr=3e-3, layer_decay=layer_decay)
    optimizer = build_optimizer(model, cfg, finetune_lr_scale(3, cfg))
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each once
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        block = re.match(r"encoder\.vit\.blocks\.(\d)\.", name)
        expected = 3e-3 if name.startswith("classifier.") else \
            1e-4 * layer_decay ** (3 - int(block[1]) if block else 4)
        assert lr_of[id(param)] == pytest.approx(expected), name
    names = {n for n, _ in model.named_parameters() if n.startswith("classifier.")}
    assert {"classifier.temporal_pos", "classifier.spatial_pos", "classifier.pool.query",
            "classifier.head.weight"} <= names
    assert finetune_lr_scale(3, ProbeOptimConfig(lr=1e-4)) is None  # neither option: one group pair, as before


def test_weight_ema_closed_form():
    """The EMA after updates t = 0, 1, 2 with decay_t = min(decay, (1 + t) / (10 + t)): e <- d e + (1 - d) w."""
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    ema = WeightEma(layer, decay=0.5)
    expected = 0.0
    for t, value in enumerate([1.0, 2.0, 4.0]):
        with torch.no_grad():
            layer.weight.fill_(value)
        ema.update(layer)
        decay = min(0.5, (1 + t) / (10 + t))  # 0.1, 0.18..., 0.25
        expected = decay * expected + (1 - decay) * value
    assert ema.shadow["weight"][0, 0].item() == pytest.approx(expected)
    restored = WeightEma(layer, decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 3 and torch.equal(restored.shadow["weight"], ema.shadow["weight"])
    ema.copy_to(layer)
    assert layer.weight[0, 0].item() == pytest.approx(expected)


def one_step(module: torch.nn.Module, clips: torch.Tensor, targets: torch.Tensor, accum_steps: int) -> float:
    """The training loop's optimiser step over (B, T, 3, S, S) ``clips`` in ``accum_steps`` micro-batches."""
    # eps=1: AdamW's first step is lr * g / (|g| + eps), smooth in g, so equal gradients show as equal weights
    # (with eps=1e-8 it is lr * sign(g), which float rounding flips on gradients near 0)
    optim = OptimConfig(lr=1e-2, warmup_steps=1, grad_clip=0.5, eps=1.0)
    optimizer = build_optimizer(module, optim)
    run = Optimisation(module, optimizer, build_scheduler(optimizer, optim, 10), None)
    task = TrainTask(module, lambda wrapped, x: wrapped(x), lambda logits, t: classification_loss_sum(logits, t, 0.1),
                     stand_in=lambda: (torch.zeros(1, *clips.shape[1:]),))
    return optimiser_step(task, run, Batch((clips,), targets), accum_steps, optim.grad_clip)


@pytest.mark.slow
@pytest.mark.parametrize("soft", [False, True])
def test_micro_batches_step_like_their_union(soft):
    """5 clips in 3 micro-batches (2 + 2 + 1), or in 7 (two of them empty: stand-in clips that count zero), step as
    one batch of 5: the same loss and, to float rounding, the same weights."""
    clips = torch.randn(5, 2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 1, 1, 2])
    targets = soft_targets(labels, 4, 0.1) * 0.7 + soft_targets(labels.flip(0), 4, 0.1) * 0.3 if soft else labels
    whole = encoder_and_classifier()
    loss_whole = one_step(whole, clips, targets, 1)
    for accum_steps in (3, 7):
        split = encoder_and_classifier()
        assert one_step(split, clips, targets, accum_steps) == pytest.approx(loss_whole, rel=1e-6)
        for (name, a), b in zip(whole.named_parameters(), split.parameters()):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


def test_drop_path_skips_whole_residual_branches_per_frame_in_training_only():
    """The probe's drop_path: block i's branches dropped with probability rate * i / (depth - 1); each frame's output
    is one of the four by hand (attention and MLP branch of the last block each kept at 1 / keep, or skipped), not
    all frames alike; in eval mode the encoder is the one without drop path."""
    encoder = encoder_and_classifier(layers=2)["encoder"]
    images = torch.randn(64, 3, 16, 16)
    with torch.no_grad():
        plain = encoder(images)
        encoder.set_drop_path(0.5)  # block 0: 0, block 1: 0.5
        assert isinstance(encoder.vit.blocks[0].drop_path1, torch.nn.Identity)
        encoder.eval()
        torch.testing.assert_close(encoder(images), plain, rtol=0, atol=0)
        encoder.train()
        torch.manual_seed(1)
        dropped = encoder(images)
        vit, last = encoder.vit, encoder.vit.blocks[1]
        x = vit.blocks[0](vit.norm_pre(vit.with_positions(vit.patch_embed(images))))
        outcomes = []
        for attn_kept in (0, 1):
            y = x + attn_kept * 2.0 * last.attn(last.norm1(x))
            for mlp_kept in (0, 1):
                outcomes.append(y + mlp_kept * 2.0 * last.mlp(last.norm2(y)))
        distance = torch.stack([(dropped - o).abs().amax(dim=(1, 2)) for o in outcomes])  # (4 outcomes, 64 frames)
    assert distance.min(0).values.max() < 1e-5  # every frame is one of the four
    taken = distance.argmin(0)
    assert len(set(taken.tolist())) == 4  # per frame, not per batch
    assert 0.3 < (taken >= 2).float().mean() < 0.7  # MLP kept for about half the frames
    encoder.set_drop_path(0.0)
    assert all(isinstance(b.drop_path2, torch.nn.Identity) for b in encoder.vit.blocks)

"""encode_image throughput of every inference precision vs open_clip fp32 on the same coca_ViT-B-32 weights, and
each as a share of this machine's matmul peak for its dtype, measured in the same run (between the models).

Alternates the implementations repetition by repetition so all see the same machine load; prints images/s, the
ratio to open_clip fp32 (> 1: faster), the min cosine to open_clip fp32's embeddings, and the percentage of the
dtype's measured matmul peak (the encoder's FLOPs per image / time / peak).

    python benchmarks/bench_encode_image.py [--batch 16] [--repeats 5] [--threads 2]

It prints the CPU kind first (ATen's capability, native bf16, VNNI): the figures hold for that kind only. An AVX-512
machine approximates an AVX2-only one with the instruction sets limited (check the printed matmul peaks drop):

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/bench_encode_image.py
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import tempfile
import time
from pathlib import Path

import torch

import coca_video
from coca_video.model.precision import (apply_precision, bf16_slowdown, cpu_kind, fastest_precision, int8_engine,
                                        quantise_int8)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of the best of ``repeats`` square matmuls in ``dtype`` (int8: a Linear quantised as ``precision=int8``
    quantises, so the same kernels)."""
    if dtype == torch.int8:
        layer = apply_precision(torch.nn.Sequential(torch.nn.Linear(size, size)), "int8")
        x = torch.randn(size, size)
        fn = lambda: layer(x)  # noqa: E731
    else:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        fn = lambda: a @ b  # noqa: E731
    fn()
    return 2 * size**3 / min(seconds(fn) for _ in range(repeats))


def encoder_flops(model) -> float:
    """Multiply-adds x 2 of one image through the ViT (patch embedding, attention, MLP; the pooler is negligible)."""
    cfg = model.cfg.vision
    tokens = 1 + (cfg.image_size // cfg.patch_size) ** 2
    width, hidden = cfg.width, int(cfg.width * cfg.mlp_ratio)
    per_layer = tokens * (4 * width * width + 2 * width * hidden) + 2 * tokens * tokens * width
    return 2 * (cfg.layers * per_layer + tokens * 3 * cfg.patch_size**2 * width)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import open_clip

    torch.manual_seed(0)
    ref = open_clip.create_model("coca_ViT-B-32").eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "open_clip_pytorch_model.bin"
        torch.save(ref.state_dict(), path)
        ours = coca_video.create_model("coca_ViT-B-32", pretrained=str(path))
    images = torch.randn(args.batch, 3, 224, 224)
    bf16_autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    variants = {  # name: (model, autocast factory, peak dtype)
        "open_clip fp32": (ref, contextlib.nullcontext, torch.float32),
        "ours fp32": (ours, contextlib.nullcontext, torch.float32),
        **({"ours bf16 autocast": (ours, bf16_autocast, torch.bfloat16),
            "ours bf16 weights": (apply_precision(copy.deepcopy(ours), "bf16"), contextlib.nullcontext, torch.bfloat16)}
           if cpu_kind().native_bf16 else {}),  # emulated bf16 takes minutes a batch here: see the line printed
        "ours int8 oneDNN": (quantise_int8(ours, "onednn"), contextlib.nullcontext, torch.int8),
        "ours int8 x86": (quantise_int8(ours, "x86"), contextlib.nullcontext, torch.int8),
    }
    dtypes = [torch.float32, torch.int8] + ([torch.bfloat16] if cpu_kind().native_bf16 else [])
    peaks = dict.fromkeys(dtypes, 0.0)  # the best seen over all repetitions
    flops = encoder_flops(ours)
    times = {name: [] for name in variants}
    with torch.inference_mode():
        reference = ref.encode_image(images)
        cosine = {}
        for name, (model, autocast, _) in variants.items():  # warm-up, and fidelity
            with autocast():
                cosine[name] = torch.nn.functional.cosine_similarity(model.encode_image(images).float(),
                                                                     reference).min().item()
        for _ in range(args.repeats):  # peaks measured between the models, under the same load as them
            peaks = {dtype: max(peak, matmul_peak(dtype)) for dtype, peak in peaks.items()}
            for name, (model, autocast, _) in variants.items():
                with autocast():
                    times[name].append(seconds(lambda: model.encode_image(images)))
    print(f"CPU: {cpu_kind()} (int8 engine chosen: {int8_engine(cpu_kind())}; precision=auto chooses "
          f"{fastest_precision(ours)[1]})")
    print(f"coca_ViT-B-32 encode_image, batch {args.batch}, {args.threads} threads, best of {args.repeats}; "
          f"matmul peaks: " + ", ".join(f"{str(d).split('.')[-1]} {p / 1e9:.0f} GFLOP/s" for d, p in peaks.items()))
    if not cpu_kind().native_bf16:
        print(f"bf16 skipped: no native bf16 on this CPU, its matmuls run {bf16_slowdown():.0f}x slower than fp32 "
              f"(precision=auto never takes it)")
    base = args.batch / min(times["open_clip fp32"])
    for name, (_, _, dtype) in variants.items():
        rate = args.batch / min(times[name])
        print(f"{name:<20} {rate:7.1f} img/s  {rate / base:5.2f}x open_clip fp32  min cosine {cosine[name]:.5f}  "
              f"{100 * rate * flops / peaks[dtype]:4.0f}% of the {str(dtype).split('.')[-1]} matmul peak")


if __name__ == "__main__":
    main()

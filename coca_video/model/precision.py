"""Inference precision: the weights a model computes with once trained.

    fp32   as trained
    bf16   every weight cast to bfloat16 (CPU with AVX-512 BF16, GPUs); LayerNorm and softmax accumulate in fp32
           inside PyTorch's bf16 kernels, outputs are cast back to fp32 by the callers that store them
    fp16   every weight cast to float16, for accelerators (CUDA, MPS; task configs refuse it on the CPU, whose fp16
           matmuls are slow); same accumulation as bf16, a 3-bit-longer mantissa and a narrower range
    int8   dynamic quantisation of every Linear layer (int8 weights, activations quantised per batch), PyTorch's
           ``torch.ao.quantization.quantize_dynamic`` with weights packed for oneDNN; the ViT's patch embedding (a
           convolution whose stride is its kernel) becomes such a Linear too; embeddings, norms, GELU and attention
           stay fp32 (GELU in bf16 was 1.05x slower in the whole encoder despite a faster kernel); CPU only

torch.ao rather than torchao: torchao 0.18's ``Int8DynamicActivationInt8WeightConfig`` (0.14-0.18 install beside
torch 2.14.1; 0.14-0.16 without their C++ kernels) took 421 ms per coca_ViT-B-32 image batch of 16 eager and 287 ms
under ``torch.compile`` (30 s to compile) against 256 ms for this path, on this 2-core AVX-512 VNNI CPU; its
per-token activation scales were closer to fp32 (min cosine 0.99978 vs 0.99912), a margin the gates do not need.

    auto   the fastest of these that passes the fidelity gates, for this model on this machine: on the CPU measured
           when the model loads (:func:`fastest_precision`: fp32, int8, and bf16 where the CPU computes bf16
           natively); on CUDA bf16 (fp16 where bf16 is not supported), on MPS fp16; for training bf16 autocast where
           bf16 is native, else fp32. Which is fastest depends on the CPU and the model: on a 2-core AVX-512
           BF16/VNNI EPYC the default model ran bf16 2.6x and int8 1.5x fp32, coca_ViT-B-32 bf16 3.8x and int8
           5.9x; with AVX2 only, bf16 matmuls run ~70x slower than fp32 and int8 is the only gain.

Training keeps fp32 weights and uses bf16 autocast instead (``runtime.autocast``). Measured fidelity and speed:
``tests/test_precision.py`` and ``benchmarks/bench_encode_image.py``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

InferencePrecision = Literal["fp32", "bf16", "fp16", "int8"]
Precision = Literal["fp32", "bf16", "fp16", "int8", "auto"]

# the fidelity gates a precision passes to be offered, against fp32 on the same weights (tests/test_precision.py also
# asks zero-shot agreement >= 99% and identical greedy captions on >= 95% of images): min cosine of image embeddings
MIN_COSINE = {"bf16": 0.999, "fp16": 0.999, "int8": 0.995}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CpuKind:
    """What this CPU computes fast, as PyTorch will use it (the environment can lower each: ``ATEN_CPU_CAPABILITY``,
    ``ONEDNN_MAX_CPU_ISA``)."""

    capability: str  # ATen's kernel level: AVX512, AVX2, DEFAULT, ...
    native_bf16: bool  # oneDNN multiplies bf16 natively (AVX-512 BF16, AMX); without it bf16 matmuls are emulated
    vnni: bool  # AVX-512 VNNI int8 dot products, with ATen at AVX512

    def __str__(self) -> str:
        extras = [name for name, has in (("native bf16", self.native_bf16), ("VNNI", self.vnni)) if has]
        return f"{self.capability}" + (f" ({', '.join(extras)})" if extras else " (no native bf16, no VNNI)")


@functools.cache
def cpu_kind() -> CpuKind:
    """This machine's :class:`CpuKind` (read once)."""
    capability = torch.backends.cpu.get_cpu_capability()
    try:
        native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # noqa: SLF001 -- oneDNN's own ISA check
    except (AttributeError, RuntimeError):
        native_bf16 = False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = []
    return CpuKind(capability, native_bf16, capability.startswith("AVX512") and "avx512_vnni" in flags)


def int8_engine(kind: CpuKind) -> str:
    """The quantised engine whose int8 Linear runs fastest on ``kind``: oneDNN with VNNI (coca_ViT-B-32, batch 16:
    5.9x fp32 vs 5.3x for fbgemm), else PyTorch's x86 engine, which picks fbgemm or oneDNN per op (AVX2: 1.6x vs
    oneDNN's 1.4-1.75x; see ``benchmarks/bench_encode_image.py``)."""
    return "onednn" if kind.vnni else "x86"


def auto_precision(device: str | torch.device, training: bool, kind: CpuKind | None = None) -> InferencePrecision:
    """What ``precision=auto`` is where no measurement is needed: training (bf16 autocast where bf16 is native,
    else fp32) and accelerators (CUDA: bf16, or fp16 without bf16 support; MPS: fp16). CPU inference is measured
    per model instead: :func:`fastest_precision`."""
    device = torch.device(device)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return "bf16" if bf16 else ("fp32" if training else "fp16")
    if device.type == "mps":
        return "fp32" if training else "fp16"
    if training:
        return "bf16" if (kind or cpu_kind()).native_bf16 else "fp32"
    raise ValueError("precision=auto for CPU inference is measured on the model: use fastest_precision")


def cpu_candidates(kind: CpuKind) -> list[InferencePrecision]:
    """The precisions worth timing on ``kind``: bf16 only where it is native (emulated, it is 10-70x slower)."""
    return ["fp32", "int8"] + (["bf16"] if kind.native_bf16 else [])


def fastest_precision(model: nn.Module, kind: CpuKind | None = None, repeats: int = 3) -> tuple[nn.Module, str]:
    """``model`` (fp32, eval, on the CPU) in the precision whose ``encode_image`` is fastest here among those that
    pass :data:`MIN_COSINE` on a fixed batch, and that precision. The choice is measured once per CPU, model (its
    config and weights), torch version and thread count, then read back from :func:`choice_cache` (a second load
    does not measure again; an unreadable or foreign entry is measured anew)."""
    kind = kind or cpu_kind()
    key = choice_key(model, kind)
    cached = read_choice(key, cpu_candidates(kind))
    if cached is not None:
        logger.warning("model.precision=auto: %s (measured on this CPU before: %s)", cached, choice_cache())
        return apply_precision(model, cached), cached
    variant, best = measure_fastest(model, kind, repeats)
    write_choice(key, best)
    return variant, best


def choice_cache() -> Path:
    """Where ``precision=auto``'s measured choices are kept: ``$COCA_VIDEO_CACHE/precision.json``, by default under
    ``$XDG_CACHE_HOME`` (``~/.cache``)/coca-video."""
    root = os.environ.get("COCA_VIDEO_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "coca-video"
    return Path(root) / "precision.json"


def choice_key(model: nn.Module, kind: CpuKind) -> str:
    """What a measured choice depends on: torch's version, the CPU, the thread count, the gates, and the model (its
    config and :func:`~coca_video.model.state_dict.weights_digest`, the one hash of a module's weights)."""
    from .state_dict import weights_digest

    config = repr(getattr(model, "cfg", type(model).__name__))
    return "|".join([torch.__version__, str(kind), str(torch.get_num_threads()), str(sorted(MIN_COSINE.items())),
                     hashlib.sha256(config.encode()).hexdigest()[:16], weights_digest(model)[:16]])


def read_choice(key: str, candidates: list[InferencePrecision]) -> InferencePrecision | None:
    """The choice stored under ``key``, if the cache file is readable and it names one of ``candidates``."""
    try:
        choice = json.loads(choice_cache().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return choice if choice in candidates else None


def write_choice(key: str, choice: str) -> None:
    """Keep ``choice`` under ``key`` (best effort: a cache that cannot be written only costs a measurement)."""
    from ..io import atomic_write_text

    path = choice_cache()
    try:
        stored = json.loads(path.read_text()) if path.is_file() else {}
        stored = stored if isinstance(stored, dict) else {}
    except (OSError, ValueError):
        stored = {}
    try:
        atomic_write_text(path, json.dumps(stored | {key: choice}, indent=1, sort_keys=True) + "\n")
    except OSError as err:
        logger.warning("model.precision=auto: could not keep the measured choice in %s (%s)", path, err)


def measure_fastest(model: nn.Module, kind: CpuKind, repeats: int = 3) -> tuple[nn.Module, InferencePrecision]:
    """Time every candidate that passes :data:`MIN_COSINE` in turn, best of ``repeats``, on one forward's worth of
    frames; the fastest variant and its precision."""
    size = model.cfg.vision.image_size
    frames = torch.randn(INT8_FRAMES_PER_FORWARD, 3, size, size, generator=torch.Generator().manual_seed(0))
    seconds: dict[str, float] = {}
    variants: dict[str, nn.Module] = {}
    with torch.inference_mode():
        reference = model.encode_image(frames)
        for precision in cpu_candidates(kind):
            variant = model if precision == "fp32" else apply_precision(
                copy.deepcopy(model) if precision == "bf16" else model, precision)
            inputs = frames.to(compute_dtype(variant))
            embedding = variant.encode_image(inputs).float()  # also the warm-up
            cosine = torch.nn.functional.cosine_similarity(embedding, reference).min().item()
            if precision != "fp32" and cosine < MIN_COSINE[precision]:
                continue
            variants[precision] = variant
            seconds[precision] = float("inf")
        for _ in range(repeats):
            for precision, variant in variants.items():
                inputs = frames.to(compute_dtype(variant))
                start = time.perf_counter()
                variant.encode_image(inputs)
                seconds[precision] = min(seconds[precision], time.perf_counter() - start)
    best = min(seconds, key=seconds.__getitem__)
    rates = ", ".join(f"{name} {len(frames) / s:.0f}" for name, s in seconds.items())
    logger.warning("model.precision=auto: %s (images/s on this CPU, %s: %s)", best, kind, rates)
    return variants[best], best


@functools.cache
def bf16_slowdown(size: int = 256) -> float:
    """How many times slower a bf16 matmul than an fp32 one is here (best of 3 each, on one thread: with two, a
    busy machine's preemptions stalled a 256 x 256 fp32 matmul from 0.5 to 20-30 ms and the ratio read 1x)."""
    seconds, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for dtype in (torch.float32, torch.bfloat16):
            a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
            a @ b
            seconds[dtype] = min(_seconds(lambda: a @ b) for _ in range(3))  # noqa: B023 -- called at once
    finally:
        torch.set_num_threads(threads)
    return seconds[torch.bfloat16] / seconds[torch.float32]


def warn_if_emulated_bf16(device: str | torch.device, kind: CpuKind | None = None) -> None:
    """One warning line when bf16 is asked of a CPU that multiplies bf16 without native instructions."""
    kind = kind or cpu_kind()
    if torch.device(device).type == "cpu" and not kind.native_bf16:
        logger.warning("model.precision=bf16: this CPU (%s) has no native bf16, so bf16 matmuls run %.0fx slower "
                       "than fp32 here; use precision=auto, int8 (inference) or fp32", kind, bf16_slowdown())


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def precision_of(model: nn.Module) -> InferencePrecision:
    """The precision ``model`` computes in: int8 when it holds dynamically quantised Linear layers, else its
    parameters' dtype."""
    if any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules()):
        return "int8"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(compute_dtype(model), "fp32")


def apply_precision(model: nn.Module, precision: Precision) -> nn.Module:
    """``model`` (eval mode) computing in ``precision``; fp32 returns it unchanged. bf16 and fp16 cast in place; int8
    returns a quantised copy (the fp32 model is left as it was); auto picks one (see the module docstring;
    :func:`precision_of` tells which)."""
    if precision == "fp32":
        return model
    if precision == "auto":
        device = next(model.parameters()).device
        if device.type == "cpu":
            return fastest_precision(model)[0]
        return apply_precision(model, auto_precision(device, training=False))
    if precision == "bf16":
        warn_if_emulated_bf16(next(model.parameters()).device)
    if precision in ("bf16", "fp16"):
        return model.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    if precision == "int8":
        if next(model.parameters()).device.type != "cpu":
            raise ValueError("int8 inference runs on the CPU only (PyTorch's dynamic quantisation)")
        return quantise_int8(model)
    raise ValueError(f"precision must be fp32, bf16, fp16, int8 or auto, got {precision!r}")


# int8 encodes video frames in chunks of 16: coca_ViT-B-32, 2 threads, 128 frames in chunks of 8/16/32/64/128 ran at
# 55/59/56/50/44 images/s (bf16: 35/36/39/40/40, fp32 flat at 18-20), and each chunk's activations share one
# quantisation range, so a smaller chunk is also closer to fp32
INT8_FRAMES_PER_FORWARD = 16


def quantise_int8(model: nn.Module, engine: str | None = None) -> nn.Module:
    """A copy of ``model`` whose Linear layers (patch embedding included) are dynamically quantised to int8 and
    nothing else changed, packed for ``engine`` (default: :func:`int8_engine` of this CPU)."""
    model = copy.deepcopy(model)
    _replace(model, lambda m: isinstance(m, nn.Conv2d) and PatchLinear.fits(m), PatchLinear)
    if hasattr(model, "frames_per_forward"):
        model.frames_per_forward = INT8_FRAMES_PER_FORWARD
    # torch.ao's deprecation notices name torchao
    with _packing_engine(engine or int8_engine(cpu_kind())), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


class PatchLinear(nn.Module):
    """A convolution whose stride equals its kernel (no padding, dilation or groups) as a Linear over flattened
    patches, so int8 quantisation reaches it: coca_ViT-B-32's patch embedding, batch 16, took 23-43 ms as an fp32
    convolution and 7-11 ms as an int8 Linear (2 busy cores; cosine to the convolution's output >= 0.9996).
    (B, C, H, W) -> (B, out, H / k, W / k), as the convolution."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.kernel = conv.kernel_size
        self.linear = nn.Linear(conv.in_channels * self.kernel[0] * self.kernel[1], conv.out_channels,
                                bias=conv.bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(conv.weight.flatten(1))
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias)

    @staticmethod
    def fits(conv: nn.Conv2d) -> bool:
        """Whether ``conv`` cuts its input into disjoint patches, each seen once."""
        return (conv.stride == conv.kernel_size and conv.padding in ((0, 0), "valid") and conv.dilation == (1, 1)
                and conv.groups == 1 and conv.padding_mode == "zeros")

    def forward(self, images: Tensor) -> Tensor:
        (kh, kw), (batch, channels, height, width) = self.kernel, images.shape
        patches = images.reshape(batch, channels, height // kh, kh, width // kw, kw).permute(0, 2, 4, 1, 3, 5)
        return self.linear(patches.flatten(3)).permute(0, 3, 1, 2)


def _replace(model: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]) -> None:
    """In place: every submodule of ``model`` for which ``match(module)`` holds becomes ``make(module)``."""
    for name, child in list(model.named_children()):
        if match(child):
            setattr(model, name, make(child))
        else:
            _replace(child, match, make)


@contextlib.contextmanager
def _packing_engine(name: str) -> Iterator[None]:
    """PyTorch's quantised engine set to ``name`` while weights are packed (where this build has it): the packed
    weights then run on that engine's kernels whatever the global setting later is. oneDNN's int8 Linear (VNNI)
    took 250 ms per coca_ViT-B-32 batch of 16 vs 280-315 ms with the default x86 engine (fbgemm), same cosines."""
    previous = torch.backends.quantized.engine
    if name in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def compute_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs should have for ``model``: that of its first floating-point parameter."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32

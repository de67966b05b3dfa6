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

Training keeps fp32 weights and uses bf16 autocast instead (``runtime.autocast``). Measured fidelity and speed:
``tests/test_precision.py`` and ``benchmarks/bench_encode_image.py``.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor, nn

InferencePrecision = Literal["fp32", "bf16", "fp16", "int8"]


def apply_precision(model: nn.Module, precision: InferencePrecision) -> nn.Module:
    """``model`` (eval mode) computing in ``precision``; fp32 returns it unchanged. bf16 and fp16 cast in place; int8
    returns a quantised copy (the fp32 model is left as it was)."""
    if precision == "fp32":
        return model
    if precision in ("bf16", "fp16"):
        return model.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    if precision == "int8":
        if next(model.parameters()).device.type != "cpu":
            raise ValueError("int8 inference runs on the CPU only (PyTorch's dynamic quantisation)")
        return quantise_int8(model)
    raise ValueError(f"precision must be fp32, bf16, fp16 or int8, got {precision!r}")


# int8 encodes video frames in chunks of 16: coca_ViT-B-32, 2 threads, 128 frames in chunks of 8/16/32/64/128 ran at
# 55/59/56/50/44 images/s (bf16: 35/36/39/40/40, fp32 flat at 18-20), and each chunk's activations share one
# quantisation range, so a smaller chunk is also closer to fp32
INT8_FRAMES_PER_FORWARD = 16


def quantise_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Linear layers (patch embedding included) are dynamically quantised to int8 and
    nothing else changed."""
    model = copy.deepcopy(model)
    _replace(model, lambda m: isinstance(m, nn.Conv2d) and PatchLinear.fits(m), PatchLinear)
    if hasattr(model, "frames_per_forward"):
        model.frames_per_forward = INT8_FRAMES_PER_FORWARD
    with _packing_engine("onednn"), warnings.catch_warnings():  # torch.ao's deprecation notices name torchao
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

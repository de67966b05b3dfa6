"""Inference precision: the weights a model computes with once trained.

    fp32   as trained
    bf16   every weight cast to bfloat16 (CPU with AVX-512 BF16, GPUs); LayerNorm and softmax accumulate in fp32
           inside PyTorch's bf16 kernels, outputs are cast back to fp32 by the callers that store them
    fp16   every weight cast to float16, for accelerators (CUDA, MPS; task configs refuse it on the CPU, whose fp16
           matmuls are slow); same accumulation as bf16, a 3-bit-longer mantissa and a narrower range
    int8   dynamic quantisation of every Linear layer (int8 weights, activations quantised per batch), PyTorch's
           ``torch.ao.quantization.quantize_dynamic``; convolutions, embeddings and norms stay fp32; CPU only

Training keeps fp32 weights and uses bf16 autocast instead (``runtime.autocast``). Measured fidelity and speed:
``tests/test_precision.py`` and ``benchmarks/bench_encode_image.py``.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

InferencePrecision = Literal["fp32", "bf16", "fp16", "int8"]


def apply_precision(model: nn.Module, precision: InferencePrecision) -> nn.Module:
    """``model`` (eval mode) computing in ``precision``; fp32 returns it unchanged. bf16 and fp16 cast in place; int8
    returns a quantised copy whose Linear layers are replaced (the fp32 model is left as it was)."""
    if precision == "fp32":
        return model
    if precision in ("bf16", "fp16"):
        return model.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    if precision == "int8":
        if next(model.parameters()).device.type != "cpu":
            raise ValueError("int8 inference runs on the CPU only (PyTorch's dynamic quantisation)")
        with warnings.catch_warnings():  # torch.ao's deprecation notice names torchao, not installed here
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    raise ValueError(f"precision must be fp32, bf16, fp16 or int8, got {precision!r}")


def compute_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs should have for ``model``: that of its first floating-point parameter."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32

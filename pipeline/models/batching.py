"""Batch invariance: a sample's output must not depend on the other samples of its batch.

The CPU kernels are batch-invariant for the feature-map convolutions at the tile sizes the pipeline uses
(oneDNN's direct convolution computes every sample the same way whatever the batch size), but not for
matrix products over a batch of vectors: MKL takes a matrix-vector kernel for one row and a blocked
matrix-matrix kernel for several, which round differently (measured: up to 1.4e-6 after a U-Net call).
Likewise ATen routes a 1x1 convolution on pooled (B, C, 1, 1) features to its own GEMM for B = 1 and to
oneDNN for B > 1. The few layers that act on per-sample vectors (noise-level MLP, degradation-kernel MLPs,
channel attention) therefore run one row at a time with `rowwise`: their cost is negligible next to the
convolutions, and a tile's pixels are then bit-identical whether it is predicted alone or in a batch.

Memory layout is the other trap: a strided view of one sample can read as NCHW where the same view of a batch
reads as channels_last (or the reverse), and the convolution then picks another oneDNN kernel (measured: the
attention output projection, jit_1x1 for one sample vs brgconv_1x1 for two). `same_layout` makes such views
dense in the layout of the block's input before they reach a convolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def rowwise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`fn` applied to each sample x[i:i+1] separately, results concatenated along dim 0.

    Args:
        fn: a function of a (1, ...) tensor.
        x: (B, ...) tensor.

    Returns:
        torch.cat([fn(x[0:1]), ..., fn(x[B-1:B])]): every row computed with the kernels of batch 1.
    """
    if x.shape[0] == 1:
        return fn(x)
    return torch.cat([fn(x[i : i + 1]) for i in range(x.shape[0])])


def same_layout(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`t` made dense in `ref`'s layout (channels_last when `ref` is, else NCHW), whatever the batch size."""
    cl = ref.dim() == 4 and not ref.is_contiguous() and ref.is_contiguous(memory_format=torch.channels_last)
    return t.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm computed one sample at a time (same parameters and state_dict keys).

    ATen's channels_last GroupNorm splits its reductions by batch and group count (measured in bf16: 0.008
    between one sample and two), so each sample is normalised alone, with the kernels of batch 1.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rowwise(super().forward, x)


def pin_pointwise_convs(model: nn.Module) -> int:
    """Give every 1x1 convolution of `model` dilation 2 (the same maths), so that on the CPU it runs oneDNN's
    kernels at every batch size >= 2, whatever the thread count; returns how many were changed.

    ATen (ConvParams::use_mkldnn) sends a float32 1x1, unstrided, undilated convolution to oneDNN only when
    the batch holds >= 16 samples or more than one thread runs, and to its own GEMM otherwise, which rounds
    differently: with one thread a tile's fp32 pixels differed by up to 7.4e-6 between batches of 4 and 16.
    A dilated convolution takes oneDNN at any batch > 1 (batch 1: `methods.ATEN_SMALL_CONV`). A 1x1 kernel has
    no taps to spread, so the output shape and values are those of the undilated convolution up to rounding.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.dilation == (1, 1):
            m.dilation = (2, 2)
            n += 1
    return n

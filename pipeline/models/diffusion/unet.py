"""Denoising U-Net h_theta on the pixel-folded noisy HR image, predicting x0 (paper III-A.3a).

Architecture and key names follow BlindSRSNF's `DiffUNetSR3Atom` (the published checkpoints'
`model.`/`ema.` sub-dicts): stem (`first_conv_x`, `first_conv_ctx`, `downs.0`), noise-level MLP
on a sinusoidal encoding of sqrt(alpha_bar), `compress` of the degradation vector, residual
blocks with an additive noise embedding and a degradation-aware convolution (DAConv), single-head
self-attention at the listed strides, nearest-neighbour upsampling, `final_conv`, pixel shuffle.

The DABlock reproduces the reference's quirk: a GroupNorm -> Swish branch is computed and
discarded; the block returns DAConv applied to its un-normalised input (golden `dablock_quirk`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.batching import GroupNorm, rowwise, same_layout


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class PositionalEncoding(nn.Module):
    """[sin(level * f_k) ..., cos(level * f_k) ...], f_k = exp(-ln(1e4) k / (dim/2)); level in (0, 1]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        count = self.dim // 2
        step = torch.arange(count, dtype=level.dtype, device=level.device) / count
        enc = level.reshape(-1, 1) * torch.exp(-math.log(1e4) * step.unsqueeze(0))
        return torch.cat([torch.sin(enc), torch.cos(enc)], dim=-1)


class FeatureWiseAffine(nn.Module):
    """h + Linear(t_emb) broadcast per channel (the reference's use_affine_level=False)."""

    def __init__(self, emb_dim: int, out_ch: int) -> None:
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(emb_dim, out_ch))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return x + rowwise(self.noise_func, emb).view(x.shape[0], -1, 1, 1)


class Block(nn.Module):
    """GroupNorm -> Swish -> Dropout -> Conv3x3 (keys block.0 and block.3)."""

    def __init__(self, dim: int, dim_out: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            GroupNorm(groups, dim),
            Swish(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(dim, dim_out, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DAConv(nn.Module):
    """Degradation-aware conv: per-sample depthwise 3x3 kernels predicted from v, + an ordinary conv."""

    def __init__(self, channels: int, kv_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.kernel = nn.Sequential(
            nn.Linear(kv_dim, kv_dim, bias=False),
            nn.LeakyReLU(0.1, True),
            nn.Linear(kv_dim, channels * 9, bias=False),
        )
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1, True)

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        kernel = rowwise(self.kernel, kv).view(b * c, 1, 3, 3)
        # NCHW for every batch size: x.reshape of one channels_last sample is a channels_last view, of several
        # an NCHW copy, and the depthwise kernel differs by layout (models.batching)
        flat = x.contiguous().reshape(1, b * c, h, w)
        out = F.conv2d(flat, kernel, groups=b * c, padding=1).view(b, c, h, w)
        return self.act(out) + self.conv(x)


class DABlock(nn.Module):
    """Reference DABlock: GN -> Swish (-> Dropout) is computed and discarded (quirk); returns DAConv(x)."""

    def __init__(self, dim: int, kv_dim: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            GroupNorm(groups, dim), Swish(), nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        )
        self.da_conv = DAConv(dim, kv_dim)
        for (
            prm
        ) in self.block.parameters():  # no effect on the output (quirk): frozen, so DDP sees no unused grads
            prm.requires_grad_(False)

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        # The reference evaluates self.block(x) here and overwrites the result; skipping it is
        # bit-identical and saves time. The GN parameters stay in the state_dict for loading.
        return self.da_conv(x, kv)


class ResnetBlock(nn.Module):
    def __init__(
        self, dim: int, dim_out: int, emb_dim: int, kv_dim: int, groups: int, dropout: float
    ) -> None:
        super().__init__()
        self.noise_func = FeatureWiseAffine(emb_dim, dim_out)
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = DABlock(dim_out, kv_dim, groups, dropout)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        h = self.noise_func(self.block1(x), emb)
        return self.block2(h, kv) + self.res_conv(x)


class SelfAttention(nn.Module):
    """Single-head attention over all positions.

    GN -> qkv 1x1 (no bias) -> softmax(qk/sqrt C) v -> out 1x1, + x.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=1)
        out = F.scaled_dot_product_attention(
            q.reshape(b, 1, c, h * w).transpose(-1, -2),
            k.reshape(b, 1, c, h * w).transpose(-1, -2),
            v.reshape(b, 1, c, h * w).transpose(-1, -2),
        )  # (b, 1, hw, c), scale 1/sqrt(c)
        return self.out(same_layout(out.transpose(-1, -2).reshape(b, c, h, w), x)) + x


class ResnetBlocWithAttn(nn.Module):
    def __init__(
        self,
        dim: int,
        dim_out: int,
        *,
        emb_dim: int,
        kv_dim: int,
        groups: int,
        dropout: float,
        with_attn: bool,
    ) -> None:
        super().__init__()
        self.res_block = ResnetBlock(dim, dim_out, emb_dim, kv_dim, groups, dropout)
        self.with_attn = with_attn
        if with_attn:
            self.attn = SelfAttention(dim_out, groups)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        x = self.res_block(x, emb, kv)
        return self.attn(x) if self.with_attn else x


class Downsample(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class DiffUNet(nn.Module):
    """x0 = h_theta(x_t, level, u, v).

    Args:
        in_ch: image channels; ctx_ch: context channels (RRDB width); deg_dim: degradation-vector size.
        inner, mults, res_blocks, attn_strides, groups, kv_dim, fold, dropout: see SRConfig.
    """

    def __init__(
        self,
        *,
        in_ch: int,
        ctx_ch: int,
        deg_dim: int,
        inner: int,
        mults: tuple[int, ...],
        res_blocks: int,
        attn_strides: tuple[int, ...],
        groups: int,
        kv_dim: int,
        fold: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.fold = fold
        emb = inner
        self.first_conv_x = nn.Conv2d(in_ch * fold * fold, inner, 3, padding=1)
        self.first_conv_ctx = nn.Conv2d(ctx_ch, inner, 3, padding=1)
        self.compress = nn.Sequential(nn.Linear(deg_dim, kv_dim, bias=False), nn.LeakyReLU(0.1, True))
        self.noise_level_mlp = nn.Sequential(
            PositionalEncoding(inner), nn.Linear(inner, inner * 4), Swish(), nn.Linear(inner * 4, inner)
        )
        kw = {"emb_dim": emb, "kv_dim": kv_dim, "groups": groups, "dropout": dropout}
        downs: list[nn.Module] = [nn.Conv2d(inner * 2, inner, 3, padding=1)]
        feat_ch = [inner]
        pre = inner
        n = len(mults)
        for ind in range(n):
            attn = 2**ind in attn_strides
            ch = inner * mults[ind]
            for _ in range(res_blocks):
                downs.append(ResnetBlocWithAttn(pre, ch, with_attn=attn, **kw))
                feat_ch.append(ch)
                pre = ch
            if ind != n - 1:
                downs.append(Downsample(pre))
                feat_ch.append(pre)
        self.downs = nn.ModuleList(downs)
        self.mid = nn.ModuleList(
            [
                ResnetBlocWithAttn(pre, pre, with_attn=True, **kw),
                ResnetBlocWithAttn(pre, pre, with_attn=False, **kw),
            ]
        )
        ups: list[nn.Module] = []
        for ind in reversed(range(n)):
            attn = 2**ind in attn_strides
            ch = inner * mults[ind]
            for _ in range(res_blocks + 1):
                ups.append(ResnetBlocWithAttn(pre + feat_ch.pop(), ch, with_attn=attn, **kw))
                pre = ch
            if ind != 0:
                ups.append(Upsample(pre))
        self.ups = nn.ModuleList(ups)
        self.final_conv = Block(pre, in_ch * fold * fold, groups)

    def forward(
        self, x_t: torch.Tensor, level: torch.Tensor, ctx: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """Args: x_t (B, C, H, W) noisy normalised HR; level (B,) sqrt(alpha_bar); ctx (B, ctx_ch, H/4, W/4);
        v (B, deg_dim). Returns the x0 prediction (B, C, H, W)."""
        emb = rowwise(self.noise_level_mlp, level.reshape(-1).to(x_t.dtype))
        kv = rowwise(self.compress, v)
        x = F.pixel_unshuffle(x_t, self.fold)  # = the reference's spatial_fold
        ctx = F.interpolate(ctx, size=x.shape[2:], mode="bilinear", align_corners=False)
        x = torch.cat([self.first_conv_x(x), self.first_conv_ctx(ctx)], dim=1)
        feats = []
        for layer in self.downs:
            x = layer(x, emb, kv) if isinstance(layer, ResnetBlocWithAttn) else layer(x)
            feats.append(x)
        for layer in self.mid:
            x = layer(x, emb, kv)
        for layer in self.ups:
            if isinstance(layer, ResnetBlocWithAttn):
                skip = feats.pop()
                x = layer(torch.cat([x[:, :, : skip.shape[2], : skip.shape[3]], skip], dim=1), emb, kv)
            else:
                x = layer(x)
        return F.pixel_shuffle(self.final_conv(x), self.fold)

"""One band-group fusion network: guide branch + multispectral branch, merged by an RRDB trunk.

Parameter names follow the reference `FusionRRDBNet` (DiffFuSR v1: `rgb_conv_first`, `rgb_rrdb`,
`ms_conv_first`, `ms_rrdb`, `*_channel_attention`, `spatial_attention_*`, `fusion_conv`, `fusion_rrdb`,
`upconv1`, `upconv2`, `HRconv`, `conv_last`), so that published v1 weights load into the `paper` layout
with `residual=False, trunk_stride=1`. Additions: `trunk_down`/`trunk_up` (coarse-grid trunk) and
`out_scale` (per-band output scale of the residual correction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.bands import RGB_BANDS
from pipeline.models.batching import rowwise
from pipeline.models.fusion.config import BAND_MEAN, BAND_STD, FusionNetConfig
from pipeline.models.rrdb import RRDB

#: Floor of the per-image band mean (reflectance) in the brightness-relative normalisation.
MIN_MEAN_REFLECTANCE = 0.005
#: Floor of the local band level that scales the correction with norm="local" (reflectance).
MIN_LOCAL_REFLECTANCE = 0.002


#: Parameter names of the reference fusion nets' inner dense blocks.
FUSION_RDB_NAMES = ("RDB1", "RDB2", "RDB3")


class ChannelAttention(nn.Module):
    """CBAM channel attention: shared 1x1 MLP on avg- and max-pooled features, sigmoid of the sum."""

    def __init__(self, nf: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(nf, max(1, nf // reduction), 1, bias=False)
        self.fc2 = nn.Conv2d(max(1, nf // reduction), nf, 1, bias=False)

    def _mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one sample at a time: a 1x1 conv on (1, C, 1, 1) and on (B, C, 1, 1) take different kernels
        avg = rowwise(self._mlp, F.adaptive_avg_pool2d(x, 1))
        mx = rowwise(self._mlp, F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: 7x7 conv over [channel mean, channel max], sigmoid gate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)
        return x * torch.sigmoid(self.conv1(s))


class FusionGroupNet(nn.Module):
    """Two-branch RRDB fusion network of one band group, on normalised tensors.

    forward(ms_up, guide):
        ms_up: (B, len(input_bands), H, W) normalised multispectral inputs, bilinearly upsampled to the
            output grid; the group's own bands are the last len(output_bands) channels.
        guide: (B, 3, H, W) normalised RGB guide (B04, B03, B02) on the output grid.
        returns (B, len(output_bands), H, W) normalised prediction. H, W divisible by trunk_stride (and by
        the group factor for `detail_only`, with the input grid's pixels aligned to the crop).
    """

    def __init__(self, cfg: FusionNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        nf, gc = cfg.nf, cfg.gc
        n_in, n_out = len(cfg.input_bands), len(cfg.output_bands)
        self.rgb_conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.rgb_rrdb = nn.Sequential(*[RRDB(nf, gc, FUSION_RDB_NAMES) for _ in range(cfg.nb_branch)])
        self.ms_conv_first = nn.Conv2d(n_in, nf, 3, 1, 1)
        self.ms_rrdb = nn.Sequential(*[RRDB(nf, gc, FUSION_RDB_NAMES) for _ in range(cfg.nb_branch)])
        self.rgb_channel_attention = ChannelAttention(nf)
        self.ms_channel_attention = ChannelAttention(nf)
        self.spatial_attention_rgb = SpatialAttention()
        self.spatial_attention_ms = SpatialAttention()
        self.fusion_conv = nn.Conv2d(2 * nf, nf, 3, 1, 1)
        s = cfg.trunk_stride
        if s > 1:
            self.trunk_down = nn.Conv2d(nf * s * s, nf, 1)
            self.trunk_up = nn.Conv2d(nf, nf * s * s, 1)
            nn.init.zeros_(self.trunk_up.weight)
            nn.init.zeros_(self.trunk_up.bias)
        self.fusion_rrdb = nn.Sequential(*[RRDB(nf, gc, FUSION_RDB_NAMES) for _ in range(cfg.nb_trunk)])
        self.upconv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.upconv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, n_out, 3, 1, 1)
        if cfg.residual:
            # Per-band scale of the correction: bands with little detail (dark SWIR, B09) learn a small one.
            self.out_scale = nn.Parameter(torch.full((n_out,), 0.1))

    def _relative(
        self, x: torch.Tensor, bands: tuple[str, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Table-normalised -> brightness-relative units x_refl / mean(x_refl) - 1 (per sample and band).

        Returns (x_rel, mean_refl (B, C, 1, 1), table std (1, C, 1, 1)).
        """
        mean_t = torch.tensor([BAND_MEAN[b] for b in bands], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std_t = torch.tensor([BAND_STD[b] for b in bands], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        refl = x * std_t + mean_t
        m = refl.mean((2, 3), keepdim=True).clamp_min(MIN_MEAN_REFLECTANCE)
        return refl / m - 1.0, m, std_t

    def forward(self, ms_up: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        lrelu = lambda t: F.leaky_relu(t, 0.2)
        x_ms, x_gd = ms_up, guide
        if self.cfg.norm in ("relative", "local"):
            x_ms, m_ms, std_ms = self._relative(ms_up, self.cfg.input_bands)
            x_gd = self._relative(guide, RGB_BANDS)[0]
        rgb = self.rgb_rrdb(lrelu(self.rgb_conv_first(x_gd)))
        rgb = self.spatial_attention_rgb(self.rgb_channel_attention(rgb))
        ms = self.ms_rrdb(lrelu(self.ms_conv_first(x_ms)))
        ms = self.spatial_attention_ms(self.ms_channel_attention(ms))
        feat = lrelu(self.fusion_conv(torch.cat((ms, rgb), 1)))
        s = self.cfg.trunk_stride
        if s > 1:
            t = self.trunk_down(F.pixel_unshuffle(feat, s))
            t = self.fusion_rrdb(t)
            feat = feat + F.pixel_shuffle(self.trunk_up(t), s)
        else:
            feat = self.fusion_rrdb(feat)
        feat = lrelu(self.upconv1(feat))
        feat = lrelu(self.upconv2(feat))
        out = self.conv_last(lrelu(self.HRconv(feat)))
        if not self.cfg.residual:
            return out
        n_out = out.shape[1]
        corr = out * self.out_scale.view(1, -1, 1, 1)
        if self.cfg.norm == "relative":
            # relative units -> table units of the own bands: detail scales with each band's brightness here
            corr = corr * m_ms[:, -n_out:] / std_ms[:, -n_out:]
        elif self.cfg.norm == "local":
            # detail proportional to the local band level (the upsampled input itself): high-pass modulation,
            # which keeps spectral angles in dark pixels (water, shadow) where additive detail distorts them
            local = ((x_ms[:, -n_out:] + 1.0) * m_ms[:, -n_out:]).clamp_min(MIN_LOCAL_REFLECTANCE)
            corr = corr * local / std_ms[:, -n_out:]
        f = self.cfg.factor
        if self.cfg.detail_only and corr.shape[-2] % f == 0 and corr.shape[-1] % f == 0:
            # High-pass the correction at the input grid's scale: subtract its block means
            # (one per input pixel).
            corr = corr - F.interpolate(
                F.avg_pool2d(corr, f), scale_factor=f, mode="bilinear", align_corners=False
            )
        return ms_up[:, -n_out:] + corr

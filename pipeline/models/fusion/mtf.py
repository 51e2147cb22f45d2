"""The published DiffFuSR fusion v2 group network: MTF-matched detail injection (GLP-style) + residual nets.

Re-implemented from the semantics documented with the reference manifests (parameter names kept so a
converted v2 state_dict loads strictly). Per band i of the group:

    pan        = sum_c softmax(pan_mixer.logits)_c * guide_c
    pan_lp_i   = bicubic_up(area_down(conv(reflect_pad(pan), mtf_filters.i), r_i), (H, W))
    detail_i   = pan - pan_lp_i
    dhat_i     = detail_i + detail_net([detail_i, ms_i])
    gain_i     = 1 + gain_estimator([pan, pan_lp_i, mean_c(ms)])
    band_i     = ms_i + gain_i * dhat_i
    out        = band + refinement([band, mean_i(dhat_i)])

Inputs are the group's own bands only (normalised, upsampled to the guide grid) and the normalised guide.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.fusion.net import FUSION_RDB_NAMES, RRDB

#: Per-band MTF at Nyquist used to initialise the filters (S2 values of the reference, by band position).
_S2_MTF = [0.29, 0.30, 0.28, 0.24, 0.23, 0.23, 0.25, 0.25, 0.27, 0.28, 0.30, 0.30]


def mtf_kernel_size(mtf: float, ratio: int) -> tuple[float, int]:
    """Gaussian sigma and odd kernel size matching an MTF value at the Nyquist of a `ratio` grid."""
    sigma = -ratio * math.sqrt(2) * math.log(mtf) / (2 * math.pi**2)
    return sigma, max(3, 2 * int(4 * sigma + 0.5) + 1)


class ConvexPanMixer(nn.Module):
    """Pan = convex (softmax-weighted) combination of the guide channels, initialised to luma weights."""

    def __init__(self) -> None:
        super().__init__()
        w = torch.tensor([0.2989, 0.5870, 0.1140])
        self.logits = nn.Parameter(torch.log(w / w.sum()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * torch.softmax(self.logits, 0).view(1, -1, 1, 1)).sum(1, keepdim=True)


class ResBlock(nn.Module):
    """x + conv21(relu(conv20(x)))."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv20 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv21 = nn.Conv2d(nf, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv21(F.relu(self.conv20(x)))


class MTFDetailNet(nn.Module):
    """One v2 group network. forward(ms_up (B, C, H, W), guide (B, 3, H, W)) -> (B, C, H, W), normalised."""

    def __init__(self, n_bands: int, ratio: int, *, nf: int = 32, nb: int = 3, gc: int = 16) -> None:
        super().__init__()
        self.n_bands = n_bands
        self.pan_mixer = ConvexPanMixer()
        self.mtf_filters = nn.ModuleList()
        self.pads: list[int] = []
        mtfs = (_S2_MTF + [0.28] * n_bands)[:n_bands]
        for i in range(n_bands):
            sigma, k = mtf_kernel_size(mtfs[i], ratio)
            conv = nn.Conv2d(1, 1, k, bias=False)
            t = torch.arange(k, dtype=torch.float32) - k // 2
            g = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
            with torch.no_grad():
                conv.weight.copy_((g / g.sum()).view(1, 1, k, k))
            self.mtf_filters.append(conv)
            self.pads.append(k // 2)
        self.register_buffer("mtf_ratios", torch.full((n_bands,), ratio, dtype=torch.int32))
        self.detail_net = nn.Sequential(
            nn.Conv2d(2, nf, 3, 1, 1),
            nn.LeakyReLU(0.2),
            *[RRDB(nf, gc, FUSION_RDB_NAMES) for _ in range(nb // 2)],
            nn.Conv2d(nf, 1, 3, 1, 1),
        )
        self.gain_estimator = nn.Sequential(
            nn.Conv2d(3, nf // 2, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(nf // 2, 1, 1)
        )
        self.refinement = nn.Sequential(
            nn.Conv2d(n_bands + 1, nf, 3, 1, 1),
            nn.LeakyReLU(0.2),
            *[ResBlock(nf) for _ in range(nb // 2)],
            nn.Conv2d(nf, n_bands, 3, 1, 1),
        )

    def _lowpass(self, pan: torch.Tensor, i: int) -> torch.Tensor:
        p = self.pads[i]
        lp = self.mtf_filters[i](F.pad(pan, (p, p, p, p), mode="reflect"))
        r = int(self.mtf_ratios[i])
        if r > 1:
            h, w = lp.shape[-2:]
            lp = F.interpolate(lp, size=(max(1, h // r), max(1, w // r)), mode="area")
            lp = F.interpolate(lp, size=(h, w), mode="bicubic", align_corners=False)
        return lp

    def forward(self, ms_up: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        pan = self.pan_mixer(guide)
        ms_mean = ms_up.mean(1, keepdim=True)
        bands, dhats = [], []
        for i in range(self.n_bands):
            lp = self._lowpass(pan, i)
            detail = pan - lp
            dhat = detail + self.detail_net(torch.cat((detail, ms_up[:, i : i + 1]), 1))
            gain = 1.0 + self.gain_estimator(torch.cat((pan, lp, ms_mean), 1))
            bands.append(ms_up[:, i : i + 1] + gain * dhat)
            dhats.append(dhat)
        enhanced = torch.cat(bands, 1)
        return enhanced + self.refinement(torch.cat((enhanced, torch.cat(dhats, 1).mean(1, keepdim=True)), 1))

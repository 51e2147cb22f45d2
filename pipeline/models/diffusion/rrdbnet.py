"""RRDB-Net spatial encoder f_phi (paper III-A.3b, ESRGAN's RRDB) with its training-only decoder.

Key names follow BasicSR's `RRDBNet` so the published checkpoints load unchanged
(`conv_first`, `body.N.rdbK.convJ`, `conv_body`, decoder `conv_up1/conv_up2/conv_hr/conv_last`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.rrdb import RRDB


class RRDBNet(nn.Module):
    """Spatial encoder u = f_phi(x_LR) plus the decoder xi that predicts a coarse x4 HR image.

    Args:
        in_ch, out_ch: image channels.
        nf: feature channels (context width), nb: RRDB blocks, gc: growth channels.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, nf: int = 64, nb: int = 23, gc: int = 32) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(in_ch, nf, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, h, w) normalised LR -> context u (B, nf, h, w)."""
        feat = self.conv_first(x)
        return feat + self.conv_body(self.body(feat))

    def decode(self, feat: torch.Tensor) -> torch.Tensor:
        """Training-only decoder xi: context (B, nf, h, w) -> coarse HR (B, out_ch, 4h, 4w)."""
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.encode(x)
        return feat, self.decode(feat)

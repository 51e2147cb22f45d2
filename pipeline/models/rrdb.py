"""ESRGAN's residual-in-residual dense block, shared by the diffusion SR encoder and the fusion networks.

The two published DiffFuSR checkpoints name the three inner blocks differently (`rdb1..3` in the SR
model's BasicSR RRDB-Net, `RDB1..3` in the fusion networks), so `RRDB` takes those names as an argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs, LeakyReLU 0.2, residual scaled by 0.2.

    Args:
        nf: feature channels in and out.
        gc: growth channels of each inner conv.
    """

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            # ESRGAN init: small residual branches keep a deep stack close to identity at the start.
            nn.init.kaiming_normal_(conv.weight, a=0.2)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three RDBs in sequence, residual scaled by 0.2.

    Args:
        nf, gc: see ResidualDenseBlock.
        names: attribute names of the three RDBs (they are the state_dict keys).
    """

    def __init__(self, nf: int, gc: int, names: tuple[str, str, str] = ("rdb1", "rdb2", "rdb3")) -> None:
        super().__init__()
        self._names = names
        for name in names:
            setattr(self, name, ResidualDenseBlock(nf, gc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for name in self._names:
            out = getattr(self, name)(out)
        return out * 0.2 + x

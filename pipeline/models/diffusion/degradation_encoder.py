"""Degradation encoder g_psi and its MoCo/InfoNCE training wrapper (paper III-A.3c, eq. 7).

`DegradationEncoder.E` is 6 x (conv3x3 + BatchNorm + LeakyReLU 0.1) (stride 2 on the 3rd and
5th conv) + global average pooling -> the degradation vector v (used by the denoiser); `mlp` is
the projection head used only by the contrastive loss. `MoCo` holds the query encoder, a momentum
key encoder and a queue of negatives. Under DDP the keys of all ranks are all-gathered before
they are enqueued (as in the official MoCo), so every rank keeps the same queue.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class DegradationEncoder(nn.Module):
    """x_LR (B, 3, h, w) normalised -> (v (B, D), z (B, D) unit-norm projection)."""

    def __init__(self, in_ch: int = 3, widths: tuple[int, ...] = (64, 64, 128, 128, 256, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_ch
        for i, w in enumerate(widths):
            stride = 2 if i in (2, 4) else 1
            layers += [nn.Conv2d(prev, w, 3, stride, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.1, True)]
            prev = w
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.E = nn.Sequential(*layers)
        self.mlp = nn.Sequential(nn.Linear(prev, prev), nn.LeakyReLU(0.1, True), nn.Linear(prev, prev))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Degradation vector v = pooled conv features (B, D) (the MoCo head is not used)."""
        return self.E(x).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fea = self.embed(x)
        return fea, F.normalize(self.mlp(fea), dim=1)


def _gather(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 under DDP (no gradient), identity otherwise."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, 0)


class MoCo(nn.Module):
    """Momentum contrast: query encoder, momentum key encoder, queue (D, K) of negative keys."""

    def __init__(self, in_ch: int, widths: tuple[int, ...], K: int, m: float, T: float) -> None:
        super().__init__()
        dim = widths[-1]
        self.K, self.m, self.T = K, m, T
        self.encoder_q = DegradationEncoder(in_ch, widths)
        self.encoder_k = DegradationEncoder(in_ch, widths)
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            pk.data.copy_(pq.data)
            pk.requires_grad = False
        g = torch.Generator().manual_seed(1234)
        self.register_buffer("queue", F.normalize(torch.randn(dim, K, generator=g), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            pk.data.mul_(self.m).add_(pq.data, alpha=1.0 - self.m)
        for bq, bk in zip(self.encoder_q.buffers(), self.encoder_k.buffers()):
            bk.data.copy_(bq.data)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        keys = _gather(keys)
        n = keys.shape[0]
        ptr = int(self.queue_ptr)
        idx = (torch.arange(n, device=keys.device) + ptr) % self.K
        self.queue[:, idx] = keys.T
        self.queue_ptr[0] = (ptr + n) % self.K

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: degradation vector of the query encoder (B, D)."""
        return self.encoder_q.embed(x)

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: returns (v (B, D) of im_q, InfoNCE loss (eq. 7) with the queue as negatives)."""
        fea, q = self.encoder_q(im_q)
        with torch.no_grad():
            self._momentum_update()
            _, k = self.encoder_k(im_k)
        l_pos = (q * k).sum(1, keepdim=True)
        l_neg = q @ self.queue.clone().detach()
        logits = torch.cat([l_pos, l_neg], 1) / self.T
        loss = F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))
        self._enqueue(k)
        return fea, loss

"""SR-aware training guides for the fusion groups: the diffusion SR of the Wald-degraded native RGB.

At inference a group network gets, as its guide, the diffusion SR of the 10 m RGB (a prediction with the
SR's own errors), while the default Wald pairs (pipeline.train.wald) give it the *native* RGB on
the group grid (sometimes blurred). A network trained that way learns to pass the guide through (the
10 m group's RGB outputs are then only as good as the SR). An `SRGuide` makes the training guide look
like the inference guide: the native 10 m RGB of a training scene is degraded by the group factor f with
the sensor model (random MTF per band, as the other inputs) and super-resolved x4 by the diffusion SR,
which lands it on the group grid (f = 4 x the group's 10 m ratio). The network then learns, from native
Sentinel-2 by the Wald protocol, to correct the SR's errors with its own bands. The same degraded RGB
is used as the network's R, G, B multispectral inputs (at inference the SR and the fusion see the
same 10 m RGB).

SR guides are expensive (a diffusion sampling per scene), so training precomputes a few draws per
scene and group once and caches them on disk (`pipeline.train.fusion`, `--sr-guide DIR`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.bands import RGB_BANDS
from pipeline.models.fusion.config import FusionNetConfig
from pipeline.models.sensor import default_sigma, wald_degrade
from pipeline.train.wald import TRAIN_MTF_RANGE, SRGuide

#: The diffusion SR needs inputs of at least this side (smaller degraded RGB is edge-padded, then cropped).
SR_MIN_SIDE: int = 16


def super_resolve_rgb(sr_model, rgb_lr: torch.Tensor, *, steps: int, seed: int) -> torch.Tensor:
    """x4 diffusion SR of a (1, 3, h, w) reflectance RGB; sides < SR_MIN_SIDE are edge-padded first."""
    h, w = rgb_lr.shape[-2:]
    ph, pw = max(0, SR_MIN_SIDE - h), max(0, SR_MIN_SIDE - w)
    x = F.pad(rgb_lr, [0, pw, 0, ph], mode="replicate") if (ph or pw) else rgb_lr
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = sr_model.super_resolve(x.float(), steps=steps, generator=g).float()
    return out[..., : 4 * h, : 4 * w].cpu()


def make_sr_guide(
    scene: dict[str, torch.Tensor],
    cfg: FusionNetConfig,
    sr_model,
    *,
    steps: int,
    generator: torch.Generator,
    mtf_range: tuple[float, float] | None = None,
) -> SRGuide:
    """Draw a per-band MTF, degrade the scene's native RGB by the group factor and super-resolve it x4.

    Args:
        scene: band id -> (1, 1, H_b, W_b) reflectance, 10 m side a multiple of the group factor.
        cfg: the group's config (its factor f: 4, 8, 24).
        sr_model: an object with `super_resolve(rgb, steps=, generator=)` (pipeline.models.diffusion).
        steps: DDIM steps.
        generator: draws the MTFs and the SR seed.
        mtf_range: MTF range (default: the training range of pipeline.train.wald).

    Returns:
        SRGuide whose `sr` lies on the group grid (10 m side / group's 10 m ratio).
    """
    lo, hi = mtf_range or TRAIN_MTF_RANGE
    f = cfg.factor
    mtfs, lrs = [], []
    for b in RGB_BANDS:
        mtf = lo + float(torch.rand((), generator=generator)) * (hi - lo)
        mtfs.append(mtf)
        lrs.append(wald_degrade(scene[b], f, sigma=default_sigma(f, mtf)))
    rgb_lr = torch.cat(lrs, 1)
    seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
    sr = super_resolve_rgb(sr_model, rgb_lr, steps=steps, seed=seed)
    return SRGuide(rgb_lr=rgb_lr, sr=sr, mtf=(mtfs[0], mtfs[1], mtfs[2]), steps=steps)


def save_sr_guides(path: str | Path, guides: list[SRGuide]) -> None:
    """Write a list of SR guides to one file (torch.save of plain tensors and numbers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save([{"rgb_lr": g.rgb_lr, "sr": g.sr, "mtf": list(g.mtf), "steps": g.steps} for g in guides], tmp)
    tmp.replace(path)


def load_sr_guides(path: str | Path) -> list[SRGuide]:
    """Inverse of `save_sr_guides`."""
    raw = torch.load(Path(path), map_location="cpu", weights_only=True)
    return [SRGuide(rgb_lr=d["rgb_lr"], sr=d["sr"], mtf=tuple(d["mtf"]), steps=int(d["steps"])) for d in raw]


__all__ = ["SR_MIN_SIDE", "SRGuide", "load_sr_guides", "make_sr_guide", "save_sr_guides", "super_resolve_rgb"]

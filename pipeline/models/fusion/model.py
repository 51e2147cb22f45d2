"""The three group networks as one model: `fuse(b10, b20, b60, guide_rgb)` -> 12 bands at 2.5 m.

Weights are one checkpoint folder per group (`<weights>/10m`, `/20m`, `/60m`, format of
pipeline.models.checkpoint, kind "fusion"); the shipped `small` weights are pipeline/weights/fusion_small.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from pipeline.bands import BAND_GROUPS, GROUP_10M, GROUP_20M, GROUP_60M, RGB_BANDS, S2_BANDS
from pipeline.errors import CheckpointError, DataError
from pipeline.models import baselines
from pipeline.models.checkpoint import (
    FUSION_BUNDLE_KIND,
    FUSION_KIND,
    check_fusion_weights,
    load_checkpoint,
    save_checkpoint,
)
from pipeline.models.fusion.config import FusionNetConfig
from pipeline.models.fusion.ensemble import dihedral_mean
from pipeline.models.fusion.gain import coarse_gain, pad_to_multiple, smooth_estimate
from pipeline.models.fusion.mtf import MTFDetailNet
from pipeline.models.fusion.net import FusionGroupNet
from pipeline.models.fusion.normalise import denormalise, normalise
from pipeline.models.measured import mask_on_grid, measured_mask
from pipeline.models.precision import autocast, memory_format
from pipeline.models.sensor import backproject, upsample, wald_degrade

SHIPPED_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "fusion_small"


def build_group_net(cfg: FusionNetConfig) -> torch.nn.Module:
    """The group network a config describes (two-branch RRDB, or the published v2 MTF net)."""
    if cfg.arch == "mtf":
        return MTFDetailNet(len(cfg.output_bands), cfg.factor, nf=cfg.nf, nb=cfg.nb_trunk, gc=cfg.gc)
    return FusionGroupNet(cfg)


class FusionModel(torch.nn.Module):
    """Three independent group networks (10m, 20m, 60m) and the band bookkeeping around them."""

    def __init__(self, configs: dict[str, FusionNetConfig]) -> None:
        super().__init__()
        missing = [g.name for g in BAND_GROUPS if g.name not in configs]
        if missing:
            raise CheckpointError(f"fusion model lacks the group network(s) {missing}")
        self.configs = configs
        self.nets = torch.nn.ModuleDict({g.name: build_group_net(configs[g.name]) for g in BAND_GROUPS})

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def group_inputs(
        self, name: str, up: dict[str, torch.Tensor], guide_rgb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (ms_up, guide) of one group from the per-group upsampled reflectance stacks."""
        cfg = self.configs[name]
        order = [b for g in (GROUP_10M, GROUP_20M, GROUP_60M) for b in g.bands]
        stack = torch.cat([up[g.name] for g in (GROUP_10M, GROUP_20M, GROUP_60M) if g.name in up], 1)
        idx = [order.index(b) for b in cfg.input_bands]
        return normalise(stack[:, idx], cfg.input_bands), normalise(guide_rgb, RGB_BANDS)

    def group_output(
        self, name: str, ms: torch.Tensor, gd: torch.Tensor, lr_own: torch.Tensor, *, ensemble: int = 1
    ) -> torch.Tensor:
        """One group net's prediction, back-projected onto its own measured bands when its config says so.

        ms, gd: the normalised network inputs on the output grid; lr_own: (B, n_out, H/f, W/f) the group's own
        bands on their measured grid, normalised like the prediction (the projection is linear and keeps
        constants, so it commutes with the per-band normalisation). ensemble > 1: the net's prediction is its
        geometric self-ensemble of that size (inference; training calls it with 1).
        """
        cfg = self.configs[name]
        net = self.nets[name]
        pred = dihedral_mean(net, ms, gd, ensemble) if ensemble > 1 else net(ms, gd)
        if cfg.backproject:
            with torch.autocast(pred.device.type, enabled=False):  # a bf16 residual would be mostly rounding
                pred = backproject(pred.float(), lr_own.float(), cfg.factor, iterations=cfg.backproject)
        return pred

    def forward(self, inputs: dict[str, tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
        """Training forward: group -> (ms_up, guide, lr_own) normalised -> group -> normalised prediction."""
        return {k: self.group_output(k, *t) for k, t in inputs.items()}

    @torch.no_grad()
    def fuse(
        self,
        b10: torch.Tensor,
        b20: torch.Tensor,
        b60: torch.Tensor,
        guide_rgb: torch.Tensor,
        *,
        precision: str = "fp32",
    ) -> torch.Tensor:
        """Lift all 12 bands onto the guide's 2.5 m grid.

        Args:
            b10: (B, 4, H, W) float32 reflectance B02 B03 B04 B08 at 10 m; H, W divisible by 6.
            b20: (B, 6, H/2, W/2) B05 B06 B07 B8A B11 B12 at 20 m.
            b60: (B, 2, H/6, W/6) B01 B09 at 60 m.
            guide_rgb: (B, 3, 4H, 4W) RGB (B04, B03, B02) at 2.5 m, e.g. the diffusion SR output.
            precision: "fp32", "bf16" or "fp16" (CUDA only): autocast dtype of the group networks (the
                back-projection stays float32). Every sample is computed as it would be alone in the batch.

        Each group's output is back-projected onto that group's measured bands (b10, b20 or b60) when its
        config sets `backproject` (the shipped weights do): degraded by the sensor model it reproduces them.

        Returns:
            (B, 12, 4H, 4W) float32 reflectance in pipeline.bands.S2_BANDS order, >= 0, NaN-free.
        """
        bsz, _, h, w = b10.shape
        expect = {
            "b10": (b10, (bsz, 4, h, w)),
            "b20": (b20, (bsz, 6, h // 2, w // 2)),
            "b60": (b60, (bsz, 2, h // 6, w // 6)),
            "guide_rgb": (guide_rgb, (bsz, 3, 4 * h, 4 * w)),
        }
        if h % 6 or w % 6:
            raise DataError(
                f"fusion input b10 is {h}x{w}; its sides must be multiples of 6 (crop or pad the tile)"
            )
        for name, (t, shape) in expect.items():
            if tuple(t.shape) != shape:
                raise DataError(f"fusion input {name} has shape {tuple(t.shape)}, expected {shape}")
            if torch.isnan(t).any():
                raise DataError(f"fusion input {name} holds NaN; fill nodata before fusion and mask it after")
        outs = self._fuse_groups(b10, b20, b60, guide_rgb, precision, [g.name for g in BAND_GROUPS])
        self._apply_injection_gains(outs, b10, b20, b60, guide_rgb, precision)
        by_band = {
            b: outs[g.name][:, i]
            for g in BAND_GROUPS
            for i, b in enumerate(self.configs[g.name].output_bands)
        }
        out = torch.stack([by_band[b] for b in S2_BANDS], 1)
        return torch.nan_to_num(out, nan=0.0).clamp_min(0.0)

    def _fuse_groups(
        self,
        b10: torch.Tensor,
        b20: torch.Tensor,
        b60: torch.Tensor,
        guide_rgb: torch.Tensor,
        precision: str,
        groups: list[str],
    ) -> dict[str, torch.Tensor]:
        """The named groups' back-projected predictions, (B, n_out, 4H, 4W) reflectance each."""
        dev = self.device
        fmt = memory_format(precision)
        up = {
            "10m": upsample(b10.to(dev, torch.float32), 4),
            "20m": upsample(b20.to(dev, torch.float32), 8),
            "60m": upsample(b60.to(dev, torch.float32), 24),
        }
        guide = guide_rgb.to(dev, torch.float32)
        measured = {"10m": b10, "20m": b20, "60m": b60}
        outs: dict[str, torch.Tensor] = {}
        for g in BAND_GROUPS:
            if g.name not in groups:
                continue
            cfg = self.configs[g.name]
            ms, gd = self.group_inputs(g.name, up, guide)
            lr_own = normalise(measured[g.name].to(dev, torch.float32), g.bands)[
                :, [g.bands.index(b) for b in cfg.output_bands]
            ]
            with autocast(dev.type, precision):
                pred = self.group_output(
                    g.name,
                    ms.contiguous(memory_format=fmt),
                    gd.contiguous(memory_format=fmt),
                    lr_own,
                    ensemble=cfg.self_ensemble,
                )
            outs[g.name] = denormalise(pred.float(), cfg.output_bands)
        return outs

    def _own_measured(self, name: str, b10, b20, b60) -> torch.Tensor:
        """A group's output bands as measured, (B, n_out, h, w) float32 reflectance on the device."""
        g = next(g for g in BAND_GROUPS if g.name == name)
        x = {"10m": b10, "20m": b20, "60m": b60}[name].to(self.device, torch.float32)
        return x[:, [g.bands.index(b) for b in self.configs[name].output_bands]]

    @torch.no_grad()
    def injection_gains(
        self,
        b10: torch.Tensor,
        b20: torch.Tensor,
        b60: torch.Tensor,
        guide_rgb: torch.Tensor,
        *,
        precision: str = "fp32",
    ) -> dict[str, torch.Tensor]:
        """Per group with `injection_gain` set: (B, n_out) gains in [0, 1] (`pipeline.models.fusion.gain`).

        The inputs of `fuse`, edge-padded to whole coarse pixels, degraded by the group's r with the sensor
        model (the guide too), fused, and compared with the measured bands.
        """
        if b10.shape[0] > 1:  # one sample at a time: the gains are sums, kept independent of the batch
            rows = [
                self.injection_gains(
                    b10[i : i + 1], b20[i : i + 1], b60[i : i + 1], guide_rgb[i : i + 1], precision=precision
                )
                for i in range(b10.shape[0])
            ]
            return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
        by_r: dict[int, list[str]] = {}
        for g in BAND_GROUPS:
            r = self.configs[g.name].injection_gain
            if r:
                by_r.setdefault(r, []).append(g.name)
        gains: dict[str, torch.Tensor] = {}
        mask10 = measured_mask(b10.to(self.device, torch.float32))  # filled nodata does not count
        for r, names in by_r.items():
            dev = self.device
            p10, p20, p60, pg = pad_to_multiple(
                *(t.to(dev, torch.float32) for t in (b10, b20, b60, guide_rgb)), unit=6 * r
            )
            c10, c20, c60, cg = (wald_degrade(t, r) for t in (p10, p20, p60, pg))
            fused_c = self._fuse_groups(c10, c20, c60, cg, precision, names)
            gs_c = None
            if any(self.configs[n].gain_gs for n in names):
                gs_c = self._gs_groups(c10, c20, c60, cg)
            for name in names:
                cfg = self.configs[name]
                own_c = self._own_measured(name, c10, c20, c60)
                smooth_c = smooth_estimate(own_c, cfg.factor, cfg.backproject or 5)
                truth = self._own_measured(name, b10, b20, b60)
                other = gs_c[name] if cfg.gain_gs else None
                k = next(g.factor_to_10m for g in BAND_GROUPS if g.name == name)
                weight = mask_on_grid(mask10, k, tuple(truth.shape[-2:]))
                gains[name] = coarse_gain(fused_c[name], smooth_c, truth, cfg.factor // r, other, weight)
        return gains

    def _gs_groups(self, b10, b20, b60, guide_rgb) -> dict[str, torch.Tensor]:
        """Gram-Schmidt (GSA) of every group with this guide, back-projected onto the measured bands."""
        dev = self.device
        t = [x.to(dev, torch.float32) for x in (b10, b20, b60, guide_rgb)]
        gs12 = baselines.gram_schmidt(*t)
        out = {}
        for g in BAND_GROUPS:
            cfg = self.configs[g.name]
            idx = [S2_BANDS.index(b) for b in cfg.output_bands]
            own = self._own_measured(g.name, *t[:3])
            out[g.name] = backproject(gs12[:, idx], own, cfg.factor, iterations=cfg.backproject or 5)
        return out

    def _apply_injection_gains(self, outs, b10, b20, b60, guide_rgb, precision: str) -> None:
        """Blend each gained group's output towards its smooth answer, in place (see `injection_gains`)."""
        gains = self.injection_gains(b10, b20, b60, guide_rgb, precision=precision)
        gs = self._gs_groups(b10, b20, b60, guide_rgb) if any(g.dim() == 3 for g in gains.values()) else {}
        for name, gain in gains.items():
            cfg = self.configs[name]
            smooth = smooth_estimate(
                self._own_measured(name, b10, b20, b60), cfg.factor, cfg.backproject or 5
            )
            if gain.dim() == 3:  # (network, Gram-Schmidt) gains
                outs[name] = (
                    smooth
                    + gain[:, :, 0, None, None] * (outs[name] - smooth)
                    + gain[:, :, 1, None, None] * (gs[name] - smooth)
                )
            else:
                outs[name] = smooth + gain[:, :, None, None] * (outs[name] - smooth)


def _set_configs(model: FusionModel, groups: tuple[str, ...] | None, **fields: Any) -> FusionModel:
    """Replace these config fields of `groups` (None: all), validated by the config as at load."""
    for name in groups or model.configs:
        model.configs[name] = dataclasses.replace(model.configs[name], **fields)
    return model


def set_injection_gain(
    model: FusionModel, r: int, groups: tuple[str, ...] | None = None, *, gs: bool = False
) -> FusionModel:
    """Set the per-band injection gain (configs `injection_gain`, `gain_gs`) for `groups` (None: all)."""
    return _set_configs(model, groups, injection_gain=r, gain_gs=gs)


def set_self_ensemble(model: FusionModel, size: int, groups: tuple[str, ...] | None = None) -> FusionModel:
    """Set the geometric self-ensemble size (configs `self_ensemble`) for `groups` (None: all)."""
    return _set_configs(model, groups, self_ensemble=size)


def save_fusion_model(model: FusionModel, folder: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write `<folder>/{10m,20m,60m}` checkpoints (kind "fusion")."""
    folder = Path(folder)
    for g in BAND_GROUPS:
        cfg = model.configs[g.name]
        config = {"kind": FUSION_KIND, "net": cfg.to_json(), "guide_bands": list(RGB_BANDS), **(extra or {})}
        save_checkpoint(
            folder / g.name,
            model.nets[g.name].state_dict(),
            config=config,
            input_bands=list(cfg.input_bands),
            output_bands=list(cfg.output_bands),
        )
    return folder


def load_fusion_model(weights: str | Path | None = None, device: str | torch.device = "cpu") -> FusionModel:
    """Load the three group networks.

    Args:
        weights: folder with `10m/`, `20m/`, `60m/` checkpoints (from `difffusr train fusion` or
            `difffusr convert-checkpoint`); None -> the shipped `small` weights.
        device: torch device to run on.

    Returns:
        FusionModel in eval mode.
    """
    folder = Path(weights) if weights is not None else SHIPPED_WEIGHTS
    check_fusion_weights(folder)  # layout, kinds, groups and bands: the CLI's check, the same messages
    if (folder / "model.safetensors").is_file():  # a bundle exported by the training launcher
        ck = load_checkpoint(folder, kind=FUSION_BUNDLE_KIND)
        with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
            model = FusionModel({k: FusionNetConfig.from_json(v) for k, v in ck.config["nets"].items()})
        try:
            model.load_state_dict(ck.state_dict, strict=True, assign=True)
        except RuntimeError as exc:
            raise CheckpointError(f"fusion checkpoint '{folder}' does not match its config: {exc}") from exc
        return model.to(device).eval()
    configs: dict[str, FusionNetConfig] = {}
    states = {}
    for g in BAND_GROUPS:
        ck = load_checkpoint(folder / g.name, kind=FUSION_KIND)
        configs[g.name] = FusionNetConfig.from_json(ck.config["net"])
        states[g.name] = ck.state_dict
    with torch.device("meta"):
        model = FusionModel(configs)
    for name, sd in states.items():
        try:
            model.nets[name].load_state_dict(sd, strict=True, assign=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"fusion checkpoint '{folder / name}' does not match its config: {exc}"
            ) from exc
    return model.to(device).eval()

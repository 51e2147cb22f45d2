"""The blind diffusion SR model (DiffFuSR stage 1): networks, training loss and `super_resolve`.

`SRDiffusion` holds the three networks under the published checkpoint's prefixes:
`encoder.` (RRDB-Net f_phi + training-only decoder xi), `E.` (MoCo with the degradation encoder
g_psi) and `model.` (the x0-predicting U-Net h_theta; the EMA weights at inference). The DDIM
sampler and the schedule are separate objects (`schedule.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.bands import RGB_BANDS
from pipeline.errors import CheckpointError, ConfigError, DataError
from pipeline.models.checkpoint import SR_KIND, check_sr_weights, load_checkpoint, save_checkpoint
from pipeline.models.diffusion.config import SRConfig
from pipeline.models.diffusion.degradation_encoder import MoCo
from pipeline.models.diffusion.rrdbnet import RRDBNet
from pipeline.models.diffusion.schedule import CosineSchedule, DDIMSampler, draw_noise
from pipeline.models.diffusion.unet import DiffUNet
from pipeline.models.precision import autocast
from pipeline.models.sensor import backproject

#: State-dict prefixes used only in training; not stored in exported checkpoints.
TRAINING_ONLY_PREFIXES: tuple[str, ...] = ("E.encoder_k.", "E.queue", "E.queue_ptr", "E.encoder_q.mlp.")

#: Back-projection iterations of the low-frequency consistency (5 converge to within 0.02 dB).
LOWFREQ_ITERATIONS = 5

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "sr_small"


def denoiser_from_config(c: SRConfig) -> DiffUNet:
    """The pixel-folded U-Net denoiser that a preset's config describes."""
    return DiffUNet(
        in_ch=c.in_channels,
        ctx_ch=c.rrdb_feat,
        deg_dim=c.deg_channels[-1],
        inner=c.unet_inner,
        mults=c.unet_mults,
        res_blocks=c.unet_res_blocks,
        attn_strides=c.unet_attn_strides,
        groups=c.unet_norm_groups,
        kv_dim=c.unet_kv_dim,
        fold=c.fold,
        dropout=c.dropout,
    )


class SRDiffusion(nn.Module):
    """Conditional diffusion SR x4 of R, G, B reflectance (B04, B03, B02).

    Args:
        config: network sizes and options (`SRConfig`, see `config.PRESETS`).
    """

    def __init__(self, config: SRConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.encoder = RRDBNet(c.in_channels, c.in_channels, c.rrdb_feat, c.rrdb_blocks, c.rrdb_grow)
        self.E = MoCo(c.in_channels, c.deg_channels, c.moco_queue, c.moco_momentum, c.moco_temperature)
        self.model = denoiser_from_config(c)
        self.schedule = CosineSchedule.cosine(c.timesteps)

    # ------------------------------------------------------------------ normalisation
    def normalize(self, refl: torch.Tensor) -> torch.Tensor:
        return (refl - self.config.norm_mean) / self.config.norm_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.config.norm_std + self.config.norm_mean

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.config.scale, mode="bicubic", align_corners=False)

    def to_target(self, hr_n: torch.Tensor, lr_n: torch.Tensor) -> torch.Tensor:
        """Diffusion target x0 from normalised HR/LR: hr_n itself, or the scaled residual over bicubic."""
        if not self.config.residual:
            return hr_n
        return (hr_n - self._up(lr_n)) * (self.config.norm_std / self.config.residual_scale)

    def from_target(self, x0: torch.Tensor, lr_n: torch.Tensor) -> torch.Tensor:
        """Reflectance HR from a sample in target space (inverse of `to_target`)."""
        if not self.config.residual:
            return self.denormalize(x0)
        return self.denormalize(self._up(lr_n)) + x0 * self.config.residual_scale

    # ------------------------------------------------------------------ training
    def forward(
        self,
        hr: torch.Tensor,
        lr: torch.Tensor,
        lr_key: torch.Tensor,
        level: torch.Tensor,
        noise: torch.Tensor,
        contrast_weight: float = 0.01,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss, eq. (8): L_elbo (L1 on x0, eq. 5) + L_consis (eq. 6) + lambda * L_contrast (eq. 7).

        Args:
            hr: (B, 3, H, W) normalised HR target x0.
            lr: (B, 3, H/4, W/4) normalised degraded LR (query crop).
            lr_key: (B, 3, h', w') another crop with the same degradation (MoCo positive).
            level: (B,) noise levels sqrt(alpha_bar) (see `CosineSchedule.training_levels`).
            noise: (B, 3, H, W) standard normal noise.
            contrast_weight: lambda of eq. (8).

        Returns:
            (total loss, {"elbo": ..., "consis": ..., "contrast": ...}).
        """
        v, l_contrast = self.E(lr, lr_key)
        ctx, coarse = self.encoder(lr)
        x0 = self.to_target(hr, lr)
        lv = level.view(-1, 1, 1, 1)
        x_t = lv * x0 + (1 - lv**2).sqrt() * noise  # eq. (2) with a continuous level
        x0_pred = self.model(x_t, level, ctx, v)
        # L1 for both terms, as the paper's eq. (5)-(6): robust to the heavy-tailed residuals of
        # noisy synthetic pairs and what the reference trains with.
        l_elbo = (x0_pred - x0).abs().mean()
        l_consis = (coarse - hr).abs().mean()
        total = l_elbo + l_consis + contrast_weight * l_contrast
        return total, {"elbo": l_elbo.detach(), "consis": l_consis.detach(), "contrast": l_contrast.detach()}

    # ------------------------------------------------------------------ inference
    def _check_input(self, rgb: torch.Tensor) -> None:
        if not torch.is_tensor(rgb) or rgb.ndim != 4:
            raise DataError(
                f"super_resolve expects a (B, 3, h, w) tensor, got {type(rgb).__name__} "
                f"{tuple(rgb.shape) if torch.is_tensor(rgb) else ''}"
            )
        if rgb.shape[1] != self.config.in_channels:
            raise DataError(
                f"the SR weights take {self.config.in_channels} bands {list(RGB_BANDS)}, but the input has "
                f"{rgb.shape[1]} channels; pass the R, G, B bands (B04, B03, B02) only"
            )
        if min(rgb.shape[-2:]) < 16:
            raise DataError(
                f"SR tile {tuple(rgb.shape[-2:])} is smaller than 16x16 LR pixels; use larger tiles"
            )
        if not torch.isfinite(rgb).all():
            raise DataError("SR input holds NaN/inf; fill nodata before super-resolution")

    @torch.no_grad()
    def _sample(
        self,
        x_lr: torch.Tensor,
        steps: int,
        generator: torch.Generator | Sequence[torch.Generator],
        eta: float,
        precision: str = "fp32",
    ) -> torch.Tensor:
        """DDIM from x_T ~ N(0, I) conditioned on a normalised, padded LR batch; returns normalised HR.

        `generator` is one generator for the whole batch, or one per sample (each sample's noise drawn from
        its own, so that its result does not depend on the batch). The networks run under `autocast` in
        `precision`; the DDIM update stays float32.
        """
        b, _, h, w = x_lr.shape
        sampler = DDIMSampler(self.schedule)
        sampler.set_timesteps(steps)
        dev = x_lr.device
        with autocast(dev.type, precision):
            v = self.E.embed(x_lr)
            ctx = self.encoder.encode(x_lr)
        shape = (b, self.config.in_channels, h * self.config.scale, w * self.config.scale)
        x = draw_noise(shape, generator, dev)
        for i in range(len(sampler)):
            with autocast(dev.type, precision):
                x0 = self.model(x, sampler.noise_level(i, b, dev), ctx, v).float()
            x = sampler.step(x0, i, x, generator=generator, eta=eta)
        return x

    @torch.no_grad()
    def super_resolve(
        self,
        rgb: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        eta: float = 0.0,
        num_samples: int = 1,
        lowfreq_consistency: bool | None = None,
        *,
        precision: str = "fp32",
    ) -> torch.Tensor:
        """Super-resolve R, G, B reflectance x4 (10 m -> 2.5 m).

        Args:
            rgb: (B, 3, h, w) float32 surface reflectance in (B04, B03, B02) order, ~0..1.5, no NaN,
                h, w >= 16 (any size: padded internally by reflection, then cropped).
            steps: DDIM steps (1..T); None -> `config.default_steps`.
            generator: torch.Generator for x_T (and eta > 0 noise); None -> seed 0. The output is a
                deterministic function of (rgb, generator state). A sequence of B generators draws each
                sample's noise from its own: sample i's output is then bit-identical to super-resolving
                rgb[i:i+1] with generator i alone (the networks are batch-invariant, models.batching).
            eta: DDIM eta (0 = deterministic sampler).
            num_samples: K > 1 draws K samples (consecutive draws of `generator`) and returns their
                mean; use `super_resolve_with_uncertainty` to also get the per-pixel std.
            lowfreq_consistency: None -> `config.lowfreq_consistency`. When on, the output is
                corrected so that the sensor model (`pipeline.models.sensor.wald_degrade`: Gaussian,
                system MTF 0.3 at the LR Nyquist, + boxcar x1/4) maps it back onto the input:
                `LOWFREQ_ITERATIONS` steps of `sensor.backproject`, out += bicubic_up(rgb - D(out)).
            precision: "fp32", "bf16" or "fp16" (CUDA only): autocast dtype of the network calls; the
                sampler update and the back-projection stay float32.

        Returns:
            (B, 3, 4h, 4w) float32 reflectance on the input's device.
        """
        return self.super_resolve_with_uncertainty(
            rgb, steps, generator, eta, num_samples, lowfreq_consistency, precision=precision
        )[0]

    @torch.no_grad()
    def super_resolve_with_uncertainty(
        self,
        rgb: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        eta: float = 0.0,
        num_samples: int = 1,
        lowfreq_consistency: bool | None = None,
        *,
        precision: str = "fp32",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `super_resolve` but returns (mean, std): std (B, 3, 4h, 4w) is the per-pixel standard
        deviation over `num_samples` samples (zeros when num_samples = 1), in reflectance units."""
        self._check_input(rgb)
        if num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
        steps = self.config.default_steps if steps is None else steps
        if not isinstance(steps, int) or not 1 <= steps <= self.config.timesteps:
            raise ConfigError(
                f"DDIM steps must be an integer in 1..{self.config.timesteps} (T), got {steps!r}"
            )
        lfc = self.config.lowfreq_consistency if lowfreq_consistency is None else lowfreq_consistency
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        was_training = self.training
        self.eval()
        try:
            dev = next(self.parameters()).device
            x = rgb.to(dev, torch.float32)
            h, w = x.shape[-2:]
            m = self.config.pad_multiple
            ph, pw = (-h) % m, (-w) % m
            xp = F.pad(x, [0, pw, 0, ph], mode="reflect") if (ph or pw) else x
            xn = self.normalize(xp)
            outs = []
            for _ in range(num_samples):
                sr = self.from_target(self._sample(xn, steps, generator, eta, precision), xn)[
                    ..., : 4 * h, : 4 * w
                ]
                if lfc:
                    sr = backproject(sr, x, self.config.scale, iterations=LOWFREQ_ITERATIONS)
                outs.append(sr)
            stack = torch.stack(outs)
            mean = stack.mean(0)
            std = stack.std(0, unbiased=False) if num_samples > 1 else torch.zeros_like(mean)
            return mean.to(rgb.device), std.to(rgb.device)
        finally:
            self.train(was_training)


def inference_state_dict(model: SRDiffusion) -> dict[str, torch.Tensor]:
    """State dict without the training-only parts (MoCo key encoder, queue, projection head)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(TRAINING_ONLY_PREFIXES)}


def save_sr_model(
    model: SRDiffusion,
    folder: str | Path,
    state_dict: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the inference weights as model.safetensors + config.json + bands.json.

    Args:
        dtype: store floating tensors in this dtype (e.g. torch.float16 to halve the shipped
            file); loading casts them back to the model's float32.
    """
    sd = state_dict if state_dict is not None else inference_state_dict(model)
    sd = {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    if dtype is not None:
        sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    return save_checkpoint(
        folder, sd, config=model.config.to_json(), input_bands=list(RGB_BANDS), output_bands=list(RGB_BANDS)
    )


def load_sr_model(weights: str | Path | None = None, device: str | torch.device = "cpu") -> SRDiffusion:
    """Load trained SR weights (a folder from `train sr` or `convert-checkpoint`).

    Args:
        weights: checkpoint folder; None -> the shipped `pipeline/weights/sr_small`.
        device: torch device for the model.

    Returns:
        SRDiffusion in eval mode; call `.super_resolve(rgb, steps=20, generator=g, eta=0.0)`.

    Raises:
        CheckpointError: missing folder, another model kind, other bands, or missing/unexpected tensors.
    """
    folder = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    check_sr_weights(folder)  # the CLI's driver-side check: the same messages, from one place
    ck = load_checkpoint(folder, kind=SR_KIND, input_bands=list(RGB_BANDS))
    try:
        config = SRConfig.from_json(ck.config)
    except (TypeError, ConfigError) as exc:
        raise CheckpointError(
            f"checkpoint '{folder}' has an unusable config.json ({exc}); re-export it"
        ) from exc
    model = SRDiffusion(config)
    expected = inference_state_dict(model)
    missing = sorted(set(expected) - set(ck.state_dict))
    unexpected = sorted(set(ck.state_dict) - set(model.state_dict()))
    wrong = sorted(k for k in expected if k in ck.state_dict and ck.state_dict[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint '{folder}' does not match its config (preset {config.preset!r}): "
            f"{len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} wrong-shape {wrong[:3]}; re-export it with `difffusr train sr` or "
            "`convert-checkpoint`"
        )
    model.load_state_dict(ck.state_dict, strict=False)
    return model.to(device).eval()

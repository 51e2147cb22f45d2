"""Configuration of the blind diffusion SR model (DiffFuSR stage 1) and its named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from pipeline.errors import ConfigError
from pipeline.models.checkpoint import SR_KIND


@dataclass(frozen=True, kw_only=True)
class SRConfig:
    """Every number needed to rebuild the SR network (serialised into config.json).

    Attributes:
        preset: name of the preset it came from ("paper", "small" or "custom").
        in_channels: image channels (3: R, G, B = B04, B03, B02).
        scale: SR factor (4: 10 m -> 2.5 m).
        rrdb_feat: RRDB-Net feature channels (paper 64); also the context channels fed to the U-Net.
        rrdb_blocks: number of RRDB blocks (paper 23).
        rrdb_grow: dense-block growth channels (paper 32).
        deg_channels: the 6 conv widths of the degradation encoder (paper 64,64,128,128,256,256);
            the last one is the degradation-vector size.
        moco_queue: MoCo queue length K (paper 8192).
        moco_momentum: key-encoder momentum m (paper 0.999).
        moco_temperature: InfoNCE temperature tau (paper 0.07).
        unet_inner: U-Net base width (paper 64).
        unet_mults: channel multipliers per level (paper 1,2,2,4,8).
        unet_res_blocks: residual blocks per level (paper 5).
        unet_attn_strides: strides (2**level) that get self-attention (paper 16 = deepest).
        unet_norm_groups: GroupNorm groups (paper 32).
        unet_kv_dim: width of the compressed degradation vector and of the DAConv kernel MLP (64).
        fold: pixel-fold factor of the noisy HR input (2).
        dropout: dropout rate (0).
        timesteps: diffusion steps T (1000), cosine schedule with s = 0.008.
        norm_mean, norm_std: input normalisation x = (refl - mean)/std (paper 0.5, 0.5); the
            clamp of the x0 prediction to [-1, 1] thus bounds reflectance to [mean-std, mean+std].
        default_steps: DDIM steps used when the caller does not say.
        residual: diffuse the residual over the bicubic x4 upsampled input, (HR - up(LR)) /
            residual_scale, instead of the image itself (the paper: False). The network, losses and
            sampler are unchanged; only the target space differs.
        residual_scale: reflectance that maps to 1.0 in the residual space.
        lowfreq_consistency: replace the output's low frequencies (through the sensor model of
            `pipeline.models.sensor`) by those of the input (see `SRDiffusion.super_resolve`).
    """

    preset: str = "custom"
    in_channels: int = 3
    scale: int = 4
    rrdb_feat: int = 64
    rrdb_blocks: int = 23
    rrdb_grow: int = 32
    deg_channels: tuple[int, ...] = (64, 64, 128, 128, 256, 256)
    moco_queue: int = 8192
    moco_momentum: float = 0.999
    moco_temperature: float = 0.07
    unet_inner: int = 64
    unet_mults: tuple[int, ...] = (1, 2, 2, 4, 8)
    unet_res_blocks: int = 5
    unet_attn_strides: tuple[int, ...] = (16,)
    unet_norm_groups: int = 32
    unet_kv_dim: int = 64
    fold: int = 2
    dropout: float = 0.0
    timesteps: int = 1000
    norm_mean: float = 0.5
    norm_std: float = 0.5
    default_steps: int = 20
    residual: bool = False
    residual_scale: float = 0.15
    lowfreq_consistency: bool = False

    def __post_init__(self) -> None:
        if len(self.deg_channels) != 6:
            raise ConfigError(f"deg_channels needs 6 widths, got {self.deg_channels}")
        if self.scale != 4:
            raise ConfigError(f"only scale 4 (10 m -> 2.5 m) is implemented, got scale={self.scale}")
        for m in self.unet_mults:
            if (self.unet_inner * m) % self.unet_norm_groups:
                raise ConfigError(
                    f"U-Net width {self.unet_inner * m} is not divisible by {self.unet_norm_groups} groups"
                )

    @property
    def pad_multiple(self) -> int:
        """LR tiles are padded to a multiple of this so the U-Net levels divide evenly."""
        hr_multiple = self.fold * 2 ** (len(self.unet_mults) - 1)
        return max(1, hr_multiple // self.scale)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = SR_KIND
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SRConfig:
        names = {f.name for f in fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)


PRESETS: dict[str, SRConfig] = {
    # The published DiffFuSR / BlindSRSNF "large" configuration (277 M parameters with EMA and MoCo).
    "paper": SRConfig(preset="paper", lowfreq_consistency=True),
    # Trains on one CPU core in well under an hour; 1.6 M inference parameters. Pixel fold 4 (the
    # U-Net runs on the LR grid with 48 folded channels) instead of 2 makes it ~4x cheaper on CPU.
    "small": SRConfig(
        preset="small",
        rrdb_feat=32,
        rrdb_blocks=1,
        rrdb_grow=16,
        deg_channels=(16, 16, 32, 32, 64, 64),
        moco_queue=1024,
        unet_inner=32,
        unet_mults=(1, 2, 2),
        unet_res_blocks=1,
        unet_attn_strides=(4,),
        unet_norm_groups=8,
        unet_kv_dim=32,
        fold=4,
        residual=True,
        norm_mean=0.5,
        norm_std=0.75,
        default_steps=20,
        lowfreq_consistency=True,
    ),
}


def get_preset(name: str) -> SRConfig:
    """Return a preset by name; raises ConfigError listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown SR preset {name!r}; choose one of {sorted(PRESETS)} (--preset)") from None

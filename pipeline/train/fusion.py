"""Wald-protocol training of the three fusion group networks on native Sentinel-2 scenes.

`difffusr train fusion --preset small --data DIR... --workers N --out RUN_DIR [--steps N] [--resume]
    [--sr-guide CACHE_DIR --sr-guide-prob 0.7] [--holdout DIR --holdout-frac 0.2]`

Each step draws, per group, a batch of crops from Wald pairs (pipeline.train.wald) of the
training scenes and updates that group's network (L1 loss on per-band normalised reflectance, paper
IV-C). The pairs are rebuilt with fresh random blur every `regen_every` steps (blind degradation).
Runs on the project's Ray Train DDP launcher (pipeline.train.launch: checkpoints/LATEST, resume, EMA,
metrics.jsonl, loss_curve.png); every rank draws its own crops. At the end the exported weights are
also written as `RUN_DIR/weights/{10m,20m,60m}` (the format `load_fusion_model` and the shipped
weights use).

SR-aware guide (`--sr-guide CACHE_DIR`): for every trained group and scene, `--sr-guide-draws` draws of
the diffusion SR of the Wald-degraded native RGB (pipeline.train.srguide) are computed once
(`--sr-guide-steps` DDIM steps, SR weights `--sr-weights`, default the shipped ones) and cached in
CACHE_DIR; each training crop then takes its guide (and its R, G, B inputs) from a cached SR draw with
probability `--sr-guide-prob`, else the native guide of the default Wald pair.

Validation block (`--holdout DIR --holdout-frac F`): the last F of the rows of scene DIR (one of --data)
are left out of training (the scene is cut to its first (1 - F) rows, rounded down to 1440 m), so they
can select models (`benchmarks/fusion_heldout.py --scenes DIR --row-frac 0.8 1`).

x4 pairs (`--wald-x4 60m --wald-x4-prob P`): the listed groups also train on pairs in the Wald x4
evaluation's geometry (pipeline.train.wald.make_wald_x4_pair: inputs degraded by 4, output on the 10 m
grid, the native bands as the sensor-degraded output's target), which fit every scene with a 10 m side of
24 px: each crop of such a group is an x4 crop with probability P, from any scene (patches included), else a
crop of the group's own Wald pair (x8 / x24) from the scenes large enough for one; every crop is an x4 crop
when no scene is. Their SR guides are the 10 m group's (the diffusion SR of the RGB degraded by 4).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from pipeline.bands import BAND_GROUPS, NATIVE_GSD_M, RGB_BANDS
from pipeline.errors import ConfigError, TrainingDataError
from pipeline.models.checkpoint import FUSION_BUNDLE_KIND
from pipeline.models.fusion.config import PRESETS, FusionNetConfig, preset_configs
from pipeline.models.fusion.model import FusionModel, load_fusion_model, save_fusion_model
from pipeline.models.precision import native_bf16
from pipeline.train.scenes import drop_nodata_border, read_training_scene
from pipeline.train.srguide import SRGuide, load_sr_guides, make_sr_guide, save_sr_guides
from pipeline.train.wald import (
    WaldCrops,
    WaldPair,
    make_wald_pair,
    make_wald_x4_pair,
    min_scene_size_10m,
    min_scene_size_10m_x4,
    sample_crops,
    wald_l1_loss,
)


@dataclass(frozen=True, kw_only=True)
class FusionTrainConfig:
    """Fusion training job.

    Attributes:
        preset: "small" or "paper" (pipeline.models.fusion.config.PRESETS).
        data: scene folders, each with one GeoTIFF per band named `*B01.tif` ... `*B12.tif` (B8A too).
        out: run folder (checkpoint/, metrics.jsonl, config.json).
        steps: optimizer steps per group.
        batch: crops per group per step and rank.
        crop: crop side in pixels of the group grid (multiple of the trunk stride).
        lr: Adam learning rate (cosine-decayed to lr/20).
        seed: base seed; rank r uses seed + 1000 r.
        regen_every: rebuild the Wald pairs with fresh random blur every this many steps.
        log_every / ckpt_every: steps between metric lines / checkpoints.
        resume: continue from out/checkpoints/LATEST.
        bf16: bfloat16 autocast for the forward pass where the device runs bfloat16 natively (about 2x faster
            on an avx512_bf16 CPU); ignored on a device that would emulate it (an AVX2-only CPU: ~10x slower).
        workers: DDP ranks (Ray Train workers).
        threads_per_worker: torch intra-op threads per rank (1 on a CPU shared with other jobs; the number
            of free cores on a quiet machine, ~1.7x faster at 2).
        ema: EMA decay of the exported weights (0 = off).
        init: optional fusion weights folder to start from (a previous run, or converted published weights);
            each net keeps the trunk grid of these weights unless `trunk_stride` is given.
        groups: the group networks to train (default all three; the others keep their initial weights).
        sr_guide: cache folder of the SR-aware guides; None = off (native guides only).
        sr_guide_prob: probability that a crop uses an SR guide (when sr_guide is set).
        sr_guide_draws: SR draws (random MTF and seed) per scene and group.
        sr_guide_steps: DDIM steps of those draws.
        sr_weights: diffusion SR weights for the guides (None = the shipped ones).
        holdout: a scene folder of `data` whose last `holdout_frac` of rows are excluded from training.
        holdout_frac: fraction of rows held out (the cut is rounded down to a multiple of 144 rows).
        trunk_stride: overrides the preset's trunk grid (1 = output grid, 2/4 = that much coarser); None keeps
            the preset's. Each group's exported config records it, so nets of different strides combine.
        wald_x4: groups that also train on x4 pairs (the evaluation's geometry; module docstring).
        wald_x4_prob: probability that a crop of such a group is an x4 crop (1 if no scene fits its own pair).
    """

    preset: str = "small"
    data: tuple[str, ...] = field(default=())
    out: str = "runs/fusion"
    steps: int = 3000
    batch: int = 12
    crop: int = 48
    lr: float = 2e-4
    seed: int = 0
    regen_every: int = 100
    log_every: int = 25
    ckpt_every: int = 250
    resume: bool = False
    bf16: bool = True
    workers: int = 1
    threads_per_worker: int = 1
    ema: float = 0.999
    init: str | None = None
    groups: tuple[str, ...] = ("10m", "20m", "60m")
    sr_guide: str | None = None
    sr_guide_prob: float = 0.7
    sr_guide_draws: int = 3
    sr_guide_steps: int = 4
    sr_weights: str | None = None
    holdout: str | None = None
    holdout_frac: float = 0.2
    trunk_stride: int | None = None
    wald_x4: tuple[str, ...] = ()
    wald_x4_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"--preset {self.preset!r} is unknown; choose one of {sorted(PRESETS)}")
        if not self.data:
            raise ConfigError("no training scene given; pass --data DIR (a folder of per-band GeoTIFFs)")
        if min(self.steps, self.batch, self.workers, self.threads_per_worker) < 1 or self.crop < 8:
            raise ConfigError("--steps, --batch, --workers, --threads-per-worker must be >= 1, --crop >= 8")
        # absolute: Ray workers run in another working directory
        object.__setattr__(self, "data", tuple(str(Path(d).resolve()) for d in self.data))
        object.__setattr__(self, "out", str(Path(self.out).resolve()))
        object.__setattr__(self, "groups", tuple(self.groups))
        bad = [g for g in self.groups if g not in ("10m", "20m", "60m")] or (
            [] if self.groups else ["(none)"]
        )
        if bad:
            raise ConfigError(f"--groups {bad} invalid; choose among 10m 20m 60m")
        object.__setattr__(self, "wald_x4", tuple(self.wald_x4))
        stray = [g for g in self.wald_x4 if g not in self.groups]
        if stray:
            raise ConfigError(f"--wald-x4 {stray}: not among the trained --groups {list(self.groups)}")
        if not 0.0 <= self.wald_x4_prob <= 1.0:
            raise ConfigError(f"--wald-x4-prob must lie in [0, 1], got {self.wald_x4_prob}")
        if not 0.0 <= self.sr_guide_prob <= 1.0 or self.sr_guide_draws < 1 or self.sr_guide_steps < 1:
            raise ConfigError(
                "--sr-guide-prob must lie in [0, 1], --sr-guide-draws and --sr-guide-steps >= 1"
            )
        if self.sr_guide is not None:
            object.__setattr__(self, "sr_guide", str(Path(self.sr_guide).resolve()))
        if self.init is not None:
            object.__setattr__(self, "init", str(Path(self.init).resolve()))
        if self.sr_weights is not None:
            object.__setattr__(self, "sr_weights", str(Path(self.sr_weights).resolve()))
        if self.trunk_stride is not None and self.trunk_stride not in (1, 2, 4):
            raise ConfigError(f"--trunk-stride must be 1, 2 or 4, got {self.trunk_stride}")
        if self.holdout is not None:
            object.__setattr__(self, "holdout", str(Path(self.holdout).resolve()))
            if self.holdout not in self.data:
                raise ConfigError(f"--holdout '{self.holdout}' is not one of the --data scenes")
            if not 0.0 < self.holdout_frac < 1.0:
                raise ConfigError(f"--holdout-frac must lie in (0, 1), got {self.holdout_frac}")
        unit = max({"10m": 4, "20m": 8, "60m": 24}[g] for g in self.groups)
        if self.crop % unit:
            raise ConfigError(
                f"--crop {self.crop} must be a multiple of {unit} (the largest group factor trained)"
            )

    def net_configs(self) -> dict[str, FusionNetConfig]:
        """The three group nets' configs: the preset's, with the trunk stride override if given."""
        overrides = {} if self.trunk_stride is None else {"trunk_stride": self.trunk_stride}
        return preset_configs(self.preset, **overrides)

    def sr_guide_groups(self) -> tuple[str, ...]:
        """The groups whose SR guides training needs: the trained ones, and the 10 m group's for x4 pairs."""
        return tuple(dict.fromkeys([*self.groups, *(["10m"] if self.wald_x4 else [])]))


def _crop_to(scene: dict[str, torch.Tensor], mult: int) -> dict[str, torch.Tensor] | None:
    """Crop a scene so the 10 m side is a multiple of `mult`; None when too small."""
    h, w = scene["B02"].shape[-2:]
    h2, w2 = h // mult * mult, w // mult * mult
    if h2 == 0 or w2 == 0:
        return None
    return {
        b: t[..., : h2 // (NATIVE_GSD_M[b] // 10), : w2 // (NATIVE_GSD_M[b] // 10)] for b, t in scene.items()
    }


#: Held-out rows are cut at a multiple of this many 10 m rows (one 60 m Wald x24 block).
HOLDOUT_UNIT: int = 144


def holdout_cut(scene: dict[str, torch.Tensor], frac: float) -> dict[str, torch.Tensor]:
    """Keep the first rows of a scene, leaving out (at least) its last `frac` of rows (validation block).

    The cut row is floor((1 - frac) H / 144) * 144 on the 10 m grid, so all band grids stay nested.
    """
    h = scene["B02"].shape[-2]
    cut = int(h * (1.0 - frac)) // HOLDOUT_UNIT * HOLDOUT_UNIT
    if cut < HOLDOUT_UNIT:
        raise TrainingDataError(
            f"--holdout-frac {frac} leaves fewer than {HOLDOUT_UNIT} training rows of {h}"
        )
    return {b: t[..., : cut // (NATIVE_GSD_M[b] // 10), :] for b, t in scene.items()}


def sr_weights_digest(weights: str | None) -> str:
    """Digest of the SR weights' files.

    The cached guides go stale when the weights change, not only their path.
    """
    from pipeline.models.diffusion.model import DEFAULT_WEIGHTS

    folder = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    h = hashlib.sha256()
    for f in sorted([*folder.glob("*.safetensors"), folder / "config.json"]):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _sr_guide_file(
    cfg: FusionTrainConfig, scene_dir: str, group: str, shape: tuple[int, ...], weights_digest: str
) -> Path:
    key = repr(
        (scene_dir, tuple(shape), group, cfg.sr_guide_draws, cfg.sr_guide_steps, cfg.seed, weights_digest)
    )
    return (
        Path(cfg.sr_guide)
        / f"{Path(scene_dir).name}_{group}_{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"
    )


def prepare_sr_guides(
    cfg: FusionTrainConfig,
    scenes: dict[str, dict[str, torch.Tensor]],
    configs: dict[str, FusionNetConfig],
    *,
    sr_model=None,
    log=print,
) -> dict[str, dict[str, list[SRGuide]]]:
    """Load (or compute once and cache in `cfg.sr_guide`) the SR guide draws of every trained group and scene.

    Args:
        cfg: the training config (sr_guide folder, draws, steps, seed, SR weights).
        scenes: scene folder -> bands (after the holdout cut), as the sampler gets them.
        configs: group -> net config, for every group of `cfg.sr_guide_groups()`.
        sr_model: an SR model to use (default: `load_sr_model(cfg.sr_weights)`, loaded only if needed).

    Returns:
        group -> scene folder -> list of SRGuide (scenes too small for the group are absent).
    """
    out: dict[str, dict[str, list[SRGuide]]] = {}
    weights_digest = sr_weights_digest(cfg.sr_weights)  # once: every scene and group shares the weights
    for g in cfg.sr_guide_groups():
        out[g] = {}
        for name, sc in scenes.items():
            c = _crop_to(sc, min_scene_size_10m(configs[g]))
            if c is None:
                continue
            path = _sr_guide_file(cfg, name, g, tuple(c["B02"].shape), weights_digest)
            if not path.is_file():
                if sr_model is None:
                    from pipeline.models.diffusion import load_sr_model

                    sr_model = load_sr_model(cfg.sr_weights, device="cpu")
                t0 = time.time()
                gen = torch.Generator().manual_seed(_seed(cfg.seed, 7, Path(name).name, g))
                guides = [
                    make_sr_guide(c, configs[g], sr_model, steps=cfg.sr_guide_steps, generator=gen)
                    for _ in range(cfg.sr_guide_draws)
                ]
                save_sr_guides(path, guides)
                log(
                    f"SR guides {g} {Path(name).name} {tuple(guides[0].sr.shape[-2:])}: {len(guides)} draws "
                    f"x {cfg.sr_guide_steps} steps in {time.time() - t0:.0f} s -> {path}"
                )
            out[g][name] = load_sr_guides(path)
    return out


def _area_weights(scenes: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    """Sampling weights ~ sqrt(area): big scenes dominate less, tiny patches are not overused."""
    return torch.tensor([math.sqrt(s["B02"].numel()) for s in scenes.values()])


class WaldSampler:
    """Per-group Wald pairs of all scenes, rebuilt with fresh random blur on demand.

    With `sr_guides`, every scene that has SR guide draws also gets an SR-guided pair (a random draw),
    and each crop comes from it with probability `sr_prob` (pipeline.train.srguide).
    Groups in `x4_groups` also get x4 pairs (pipeline.train.wald.make_wald_x4_pair) of every scene with a
    10 m side of at least `crop`, guided by the 10 m group's SR draws; a crop of such a group is an x4 crop
    with probability `x4_prob` (always when no scene fits the group's own pair, never when none fits an x4
    pair).
    """

    def __init__(
        self,
        scenes: dict[str, dict[str, torch.Tensor]],
        configs: dict[str, FusionNetConfig],
        crop: int,
        generator: torch.Generator,
        *,
        sr_guides: dict[str, dict[str, list[SRGuide]]] | None = None,
        sr_prob: float = 0.0,
        x4_groups: tuple[str, ...] = (),
        x4_prob: float = 0.5,
    ):
        self.gen = generator
        self.crop = crop
        self.configs = configs
        self.sr_guides = sr_guides or {}
        self.sr_prob = sr_prob
        self.x4_prob = x4_prob
        self.scenes: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
        self.weights: dict[str, torch.Tensor] = {}
        self.x4_scenes: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
        self.x4_weights: dict[str, torch.Tensor] = {}
        for g in BAND_GROUPS:
            if g.name not in configs:
                continue
            cfg = configs[g.name]
            usable = {}
            for name, sc in scenes.items():
                c = _crop_to(sc, min_scene_size_10m(cfg))
                if c is not None and min(c["B02"].shape[-2:]) // g.factor_to_10m >= crop:
                    usable[name] = c
            if g.name in x4_groups:
                x4 = {}
                for name, sc in scenes.items():
                    c = _crop_to(sc, min_scene_size_10m_x4(cfg))
                    if c is not None and min(c["B02"].shape[-2:]) >= crop:
                        x4[name] = c
                if x4:
                    self.x4_scenes[g.name] = x4
                    self.x4_weights[g.name] = _area_weights(x4)
            if not usable and g.name not in self.x4_scenes:
                raise TrainingDataError(
                    f"no training scene is large enough for the {g.name} group (10 m side >= "
                    f"{max(min_scene_size_10m(cfg), crop * g.factor_to_10m)} px at --crop {crop}); "
                    "add a larger scene, "
                    f"lower --crop, or leave the group out with --groups"
                )
            if usable:
                self.scenes[g.name] = usable
                self.weights[g.name] = _area_weights(usable)
        self.pairs: dict[str, list[WaldPair]] = {}
        self.sr_pairs: dict[str, list[WaldPair | None]] = {}
        self.x4_pairs: dict[str, list[WaldPair]] = {}
        self.regenerate()

    def regenerate(self) -> None:
        x4_guides = self.sr_guides.get("10m", {}) if self.sr_prob > 0 else {}
        for name, scs in self.x4_scenes.items():
            pairs = []
            for scene_name, s in scs.items():
                draws = x4_guides.get(scene_name)
                guided = bool(draws) and float(torch.rand((), generator=self.gen)) < self.sr_prob
                draw = draws[int(torch.randint(0, len(draws), (), generator=self.gen))] if guided else None
                pairs.append(make_wald_x4_pair(s, self.configs[name], generator=self.gen, sr_guide=draw))
            self.x4_pairs[name] = pairs
        for name, scs in self.scenes.items():
            self.pairs[name] = [
                make_wald_pair(s, self.configs[name], generator=self.gen) for s in scs.values()
            ]
            guides = self.sr_guides.get(name, {})
            srp: list[WaldPair | None] = []
            for scene_name, s in scs.items():
                draws = guides.get(scene_name) if self.sr_prob > 0 else None
                if not draws:
                    srp.append(None)
                    continue
                k = int(torch.randint(0, len(draws), (), generator=self.gen))
                srp.append(make_wald_pair(s, self.configs[name], generator=self.gen, sr_guide=draws[k]))
            self.sr_pairs[name] = srp

    def batch(self, group: str, n: int) -> WaldCrops:
        """n crops of one group, drawn from its scenes' pairs."""
        if group in self.x4_pairs:
            prob = 1.0 if group not in self.pairs else self.x4_prob
            n_x4 = int((torch.rand(n, generator=self.gen) < prob).sum())
            parts = [self._x4_batch(group, n_x4)] if n_x4 else []
            if n_x4 < n:
                parts.append(self._own_pair_batch(group, n - n_x4))
            return WaldCrops.cat(parts)
        return self._own_pair_batch(group, n)

    def _x4_batch(self, group: str, n: int) -> WaldCrops:
        # A scene's x4 pair is SR-guided or not as a whole, redrawn with the pairs (regenerate).
        idx = torch.multinomial(self.x4_weights[group], n, replacement=True, generator=self.gen)
        f = self.configs[group].factor
        pairs = self.x4_pairs[group]
        return WaldCrops.cat(
            [sample_crops(pairs[i], self.crop, 1, generator=self.gen, align=f) for i in idx.tolist()]
        )

    def _own_pair_batch(self, group: str, n: int) -> WaldCrops:
        idx = torch.multinomial(self.weights[group], n, replacement=True, generator=self.gen)
        use_sr = torch.rand(n, generator=self.gen) < self.sr_prob
        f = self.configs[group].factor
        parts = []
        for i, u in zip(idx.tolist(), use_sr.tolist(), strict=True):
            sr_pair = self.sr_pairs[group][i]
            pair = sr_pair if (u and sr_pair is not None) else self.pairs[group][i]
            parts.append(sample_crops(pair, self.crop, 1, generator=self.gen, align=f))
        return WaldCrops.cat(parts)


def lr_factor(step: int, steps: int, warmup: int = 50) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 1/20 of the base rate at `steps`."""
    warm = min(1.0, (step + 1) / warmup)
    cos = 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    return warm * (0.05 + 0.95 * cos)


def _seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "little")


def load_training_scenes(cfg: FusionTrainConfig) -> dict[str, dict[str, torch.Tensor]]:
    """Read every --data scene (nodata border cut off); the --holdout scene is cut to its training rows."""
    scenes = {d: drop_nodata_border(read_training_scene(d), d) for d in cfg.data}
    if cfg.holdout is not None:
        scenes[cfg.holdout] = holdout_cut(scenes[cfg.holdout], cfg.holdout_frac)
    return scenes


class FusionTask:
    """The fusion training task for pipeline.train.launch (one DDP model = the three group networks).

    The three networks share no parameter and each gets its own L1 loss; one Adam with one parameter
    group per network on the summed loss updates each network exactly as its own optimizer would
    (Adam is per-parameter), which is the paper's "one optimizer per group". Global grad-norm
    clipping is off so the groups stay independent.
    """

    def __init__(self, cfg: FusionTrainConfig) -> None:
        self.cfg = cfg
        self.find_unused_parameters = len(cfg.groups) < 3
        self.ema_decay = cfg.ema
        self.description = {"task": "fusion", **asdict(cfg)}
        self._sampler: WaldSampler | None = None
        self._epoch = -1

    def setup(self, rank: int, world_size: int, device: torch.device) -> None:
        self.rank, self.device = rank, device
        self.scenes = load_training_scenes(self.cfg)
        self._sr_guides: dict[str, dict[str, list[SRGuide]]] | None = None

    def build_model(self) -> torch.nn.Module:
        torch.manual_seed(self.cfg.seed)  # identical initial weights on every rank
        configs = self.cfg.net_configs()
        init = load_fusion_model(self.cfg.init) if self.cfg.init else None
        if init is not None:
            # Each net keeps the trunk grid of the weights it starts from (the shipped 60 m net's differs
            # from the preset's) and their per-band injection gain, an inference-time choice the ship rule
            # made for those weights (training never runs it): fine-tuning the shipped nets must not
            # silently turn it off. `backproject` comes from the preset.
            keep_stride = self.cfg.trunk_stride is None
            configs = {
                k: replace(
                    c,
                    trunk_stride=init.configs[k].trunk_stride if keep_stride else c.trunk_stride,
                    injection_gain=init.configs[k].injection_gain,
                    gain_gs=init.configs[k].gain_gs,
                )
                for k, c in configs.items()
            }
        model = FusionModel(configs).train()
        if init is not None:  # weights of the same layout (a previous run of this preset)
            try:
                model.load_state_dict(init.state_dict(), strict=True)
            except RuntimeError as exc:
                raise ConfigError(
                    f"--init '{self.cfg.init}' does not fit the {self.cfg.preset!r} preset: {exc}"
                ) from exc
        self._configs = model.configs
        return model

    def build_optimizer(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        groups = [{"params": list(model.nets[g.name].parameters()), "name": g.name} for g in BAND_GROUPS]
        opt = torch.optim.Adam(groups, lr=self.cfg.lr, betas=(0.9, 0.999))
        steps = self.cfg.steps
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps))

    def get_batch(self, step: int, rank: int, world_size: int) -> dict[str, WaldCrops]:
        epoch = step // self.cfg.regen_every
        if self._sampler is None or epoch != self._epoch:
            # Wald pairs with fresh random blur; a function of (seed, epoch, rank) so resuming reproduces it.
            gen = torch.Generator().manual_seed(_seed(self.cfg.seed, epoch, rank))
            configs = {k: v for k, v in self._configs.items() if k in self.cfg.groups}
            if self.cfg.sr_guide is not None and self._sr_guides is None:
                self._sr_guides = prepare_sr_guides(self.cfg, self.scenes, self._configs)
            self._sampler = WaldSampler(
                self.scenes,
                configs,
                self.cfg.crop,
                gen,
                sr_guides=self._sr_guides,
                sr_prob=self.cfg.sr_guide_prob if self.cfg.sr_guide else 0.0,
                x4_groups=self.cfg.wald_x4,
                x4_prob=self.cfg.wald_x4_prob,
            )
            self._epoch = epoch
        self._sampler.gen.manual_seed(_seed(self.cfg.seed, step, rank, 1))
        return {g: self._sampler.batch(g, self.cfg.batch) for g in self.cfg.groups}

    def train_step(
        self, model: torch.nn.Module, batch: dict[str, WaldCrops], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        inputs = {
            k: (v.ms_up.to(self.device), v.guide.to(self.device), v.lr.to(self.device))
            for k, v in batch.items()
        }
        bf16 = self.cfg.bf16 and native_bf16(self.device.type)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            preds = model(inputs)
        losses = {k: wald_l1_loss(preds[k].float(), batch[k]) for k in preds}
        return sum(losses.values()), {f"l1_{k}": float(v.detach()) for k, v in losses.items()}

    def export(
        self, model: torch.nn.Module
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str], list[str]]:
        config = {
            "kind": FUSION_BUNDLE_KIND,
            "nets": {k: c.to_json() for k, c in model.configs.items()},
            "guide_bands": list(RGB_BANDS),
            "preset": self.cfg.preset,
            "train_data": list(self.cfg.data),
        }
        outs = [b for g in BAND_GROUPS for b in g.bands]
        return model.state_dict(), config, list(model.configs["60m"].input_bands) + list(RGB_BANDS), outs


def train_fusion(cfg: FusionTrainConfig, *, ray_address: str | None = None) -> tuple[Path, Any]:
    """Train on Ray Train DDP (`difffusr train fusion`, pipeline.cli.train), then write `cfg.out`/weights.

    Returns:
        (the exported weights folder, the launcher's LaunchResult).
    """
    from pipeline.train.launch import LaunchConfig, launch

    if cfg.sr_guide is not None:  # compute the SR guide cache once here, not in every rank
        prepare_sr_guides(cfg, load_training_scenes(cfg), cfg.net_configs())
    result = launch(
        FusionTask(cfg),
        LaunchConfig(
            run_dir=cfg.out,
            workers=cfg.workers,
            threads_per_worker=cfg.threads_per_worker,
            steps=cfg.steps,
            checkpoint_every=cfg.ckpt_every,
            log_every=cfg.log_every,
            resume=cfg.resume,
            grad_clip=0.0,
            ray_address=ray_address,
        ),
    )
    weights = save_fusion_model(
        load_fusion_model(result.final_checkpoint),
        Path(cfg.out) / "weights",
        extra={"preset": cfg.preset, "steps": result.steps_done, "train_data": list(cfg.data)},
    )
    return weights, result

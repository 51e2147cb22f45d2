"""The job configuration: one frozen dataclass per concern, composed into `RunConfig` (or `PlanRunConfig`).

Every field is validated at construction and a bad value raises `ConfigError` naming its flag, so the CLI
fails before any search, ingest or model load. The dataclass defaults are the CLI's defaults (one source).
This module imports nothing heavy (no torch, rasterio, zarr or ray): the CLI imports it before anything else.
Weights folders are checked by the CLI (`pipeline.models.checkpoint.check_*_weights`, cheap), since the
config sits below the models in the import layers.

The resolved config is written into every output's manifest, and its pixel-relevant part fingerprints the
job so that a rerun into the same `--out` resumes it, and a different job is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

from pipeline.catalog.query import CatalogOptions, SearchQuery
from pipeline.errors import ConfigError
from pipeline.tiling.grid import DEFAULT_CORE, DEFAULT_HALO, GRID_ANCHORS, GRID_MULTIPLE

#: The super-resolution methods: the learned DiffFuSR and two baselines (pipeline.inference.methods).
METHODS: tuple[str, ...] = ("difffusr", "gs", "bicubic")
DEFAULT_METHOD = "difffusr"
#: Methods whose inference is light array arithmetic (tens of ms per tile on one core, no model): their actors
#: reserve no CPU, so the ingest/mosaic/export tasks get every core (issue 12: with one of two CPUs held by an
#: idle bicubic actor, the stream ran its tasks one at a time).
LIGHT_METHODS: tuple[str, ...] = ("gs", "bicubic")
#: GeoTIFF/COG value types: "uint16" reflectance x 10000 (nodata 0), or "float32" reflectance (nodata NaN).
DTYPES: tuple[str, ...] = ("uint16", "float32")
#: Compute precisions of the learned method (pipeline.models.precision): autocast dtype of the networks.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
#: "auto": bf16 (autocast + channels_last) where the device runs bfloat16 natively (CUDA with bf16, a CPU with
#: avx512_bf16/AMX), else fp32 (`pipeline.models.precision.resolve_precision`). bf16 passes the rule (held-out
#: 12-band ERGAS within 1 % and 10 m PSNR within 0.05 dB of fp32; shipped weights, 3 steps: 2.768 vs 2.767,
#: 41.482 vs 41.482 dB, benchmarks/RESULTS.md "Precision") and runs 2.2x fp32 on avx512_bf16; emulated on an
#: AVX2-only CPU it ran the fusion nets 10x slower than fp32, hence not bf16 everywhere.
DEFAULT_PRECISION = "auto"
#: Steps of the diffusion schedule (T); DDIM may take at most this many.
SCHEDULE_STEPS = 1000
#: Largest seed (32 bits): tile seeds are seed + tile index, and must stay valid generator seeds.
MAX_SEED = 2**32 - 1
#: Most draws of `--uncertainty K` (each draw is a full diffusion SR + fusion pass: cost grows ~K x).
MAX_UNCERTAINTY_DRAWS = 64
#: Sizes of the fusion nets' geometric self-ensemble (`--self-ensemble`; 1 = the nets alone); the same tuple
#: as `pipeline.models.fusion.config.ENSEMBLE_SIZES` (tests/models/fusion/test_fusion_ensemble.py checks it).
ENSEMBLE_SIZES = (1, 2, 4, 8)


@dataclass(frozen=True, kw_only=True)
class MethodOptions:
    """Options of the learned method (ignored by the baselines).

    Attributes:
        sr_weights: diffusion SR checkpoint folder (None: the shipped small model).
        fusion_weights: fusion checkpoint folder (None: the shipped small model).
        steps: DDIM sampling steps of the diffusion SR (None: the SR weights' `default_steps`).
        precision: compute precision of the networks: auto (bf16 where the device has native bfloat16,
            else fp32), fp32, bf16 (autocast + channels_last; oneDNN bf16 on CPU) or fp16 (CUDA only).
        device: torch device string ("cpu", "cuda").
        uncertainty: K seeded draws of the diffusion SR per tile (K >= 2): the product is the mean of the K
            fused outputs and the per-pixel std over K is written as an uncertainty layer; 0 or 1 = off.
        self_ensemble: 1, 2, 4 or 8: every fusion group net's prediction is the mean over that many flips and
            turns of its inputs (`pipeline.models.fusion.ensemble`; the fusion nets' cost times N); None:
            what the fusion weights' config says.
    """

    sr_weights: str | None = None
    fusion_weights: str | None = None
    steps: int | None = None
    precision: str = DEFAULT_PRECISION
    device: str = "cpu"
    uncertainty: int = 0
    self_ensemble: int | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and not 1 <= self.steps <= SCHEDULE_STEPS:
            raise ConfigError(
                f"--steps {self.steps} must be between 1 and {SCHEDULE_STEPS} "
                f"(the schedule has T = {SCHEDULE_STEPS})"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r} must be one of {', '.join(PRECISIONS)}")
        if not 0 <= self.uncertainty <= MAX_UNCERTAINTY_DRAWS:
            raise ConfigError(
                f"--uncertainty {self.uncertainty} must be between 2 and {MAX_UNCERTAINTY_DRAWS} draws "
                "(0 or 1 = off)"
            )
        if self.self_ensemble is not None and self.self_ensemble not in ENSEMBLE_SIZES:
            raise ConfigError(
                f"--self-ensemble {self.self_ensemble} must be one of {', '.join(map(str, ENSEMBLE_SIZES))} "
                "(1 = the fusion nets alone)"
            )
        if self.uncertainty == 1:  # one draw has no spread: the same job as off (and the same fingerprint)
            object.__setattr__(self, "uncertainty", 0)
        # fp16 on a CPU is refused where the device is known: when the method is built (models.precision),
        # since `difffusr run` picks the device (CUDA when the cluster has GPUs) after the flags are parsed.


@dataclass(frozen=True, kw_only=True)
class TilingConfig:
    """Attributes:
    core: tile core side, 10 m pixels (multiple of 6); 96 px = 960 m = 384 output pixels.
    halo: context/blend margin on each side, 10 m pixels (multiple of 6, at most half the core).
    grid: "aoi" (tiles from the AOI's corner, the job alone) or "zone" (the zone's fixed tile lattice,
        seamless with every other job in the CRS; what plan units use): `io.grid.job_grid`.
    """

    core: int = DEFAULT_CORE  # defaults: tiling.grid, the one source (tiling sits below config)
    halo: int = DEFAULT_HALO
    grid: str = "aoi"

    def __post_init__(self) -> None:
        if self.core < GRID_MULTIPLE or self.core % GRID_MULTIPLE:
            raise ConfigError(
                f"--tile-size {self.core} must be a positive multiple of {GRID_MULTIPLE} 10 m pixels "
                "(60 m pixels must nest exactly), e.g. 96"
            )
        if self.halo < 0 or self.halo % GRID_MULTIPLE:
            raise ConfigError(
                f"--halo {self.halo} must be a multiple of {GRID_MULTIPLE} 10 m pixels, >= 0, e.g. 12"
            )
        if self.halo * 2 > self.core:
            raise ConfigError(
                f"--halo {self.halo} is more than half of --tile-size {self.core}; use a smaller halo"
            )
        if self.grid not in GRID_ANCHORS:
            raise ConfigError(f"--grid {self.grid!r} is not one of {', '.join(GRID_ANCHORS)}")


@dataclass(frozen=True, kw_only=True)
class ComputeConfig:
    """Attributes:
    ray_address: existing Ray cluster ("auto", "ray://host:10001"); None starts a local one.
    workers: inference actors; None = one per GPU, else one CPU actor per 2 cores (at least 1).
    batch_tiles: tiles per actor call.
    skip_bad_assets: leave granules with unreadable assets out (and name them) instead of failing the job.
    """

    ray_address: str | None = None
    workers: int | None = None
    batch_tiles: int = 4
    skip_bad_assets: bool = False

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers {self.workers} must be at least 1")
        if self.batch_tiles < 1:
            raise ConfigError(f"--batch-tiles {self.batch_tiles} must be at least 1")


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """Attributes:
    out: output folder, local path or fsspec URL (s3://bucket/prefix).
    dtype: value type of the products (the Zarr mosaic and the COG): "uint16" (reflectance x 10000, 0 =
        nodata; the Zarr carries CF scale_factor 1e-4, which xarray decodes) or "float32" (NaN nodata).
    keep_work: keep the working store (tiles, predictions) after success.
    overwrite: discard an existing output of a different job in `out`.
    """

    out: str
    dtype: str = "uint16"
    keep_work: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype!r} must be one of {', '.join(DTYPES)}")
        if not self.out:
            raise ConfigError("--out is required: a folder path or s3:// URL for the outputs")


def check_seed(seed: int) -> None:
    """ConfigError unless `seed` is a valid sampler seed (0 <= seed <= MAX_SEED)."""
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed {seed} must be between 0 and {MAX_SEED}")


def check_uncertainty(method: str, draws: int) -> None:
    """ConfigError unless `--uncertainty` fits `--method`: only the diffusion method has draws to spread."""
    if draws > 1 and method != "difffusr":
        raise ConfigError(
            f"--uncertainty {draws} needs --method difffusr: {method} is deterministic (every draw would be "
            "the same), so it has no spread to report; drop --uncertainty"
        )


def check_crs(crs: str) -> None:
    """ConfigError unless `crs` names a projected CRS in metres (a 2.5 m grid needs one)."""
    from pyproj import CRS  # pyproj is light, but only a --crs needs it
    from pyproj.exceptions import CRSError

    try:
        parsed = CRS.from_user_input(crs)
    except CRSError:
        raise ConfigError(f"--crs {crs!r} is not a CRS pyproj knows; use e.g. EPSG:32633") from None
    if not parsed.is_projected or parsed.axis_info[0].unit_name not in ("metre", "meter"):
        raise ConfigError(
            f"--crs {crs!r} is not a projected CRS in metres; a 2.5 m grid needs one (e.g. a UTM zone)"
        )


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """What every `run` job has, whatever its area: output, method, model, tiling, compute and seed."""

    output: OutputConfig
    method: str = DEFAULT_METHOD
    model: MethodOptions = field(default_factory=MethodOptions)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        check_seed(self.seed)
        check_uncertainty(self.method, self.model.uncertainty)


@dataclass(frozen=True, kw_only=True)
class RunConfig(JobConfig):
    """Everything `difffusr run` needs: the job and its search (area, dates), in the output CRS `crs`."""

    query: SearchQuery
    crs: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crs is not None:
            check_crs(self.crs)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))

    def fingerprint(self, item_ids: list[str]) -> str:
        """Hash of what determines the pixels: query, method, model, tiling, CRS, seed and the input items."""
        doc = self.to_dict()
        doc.pop("output")
        doc.pop("compute")
        doc["model"].pop("device", None)
        if not doc["model"].get("uncertainty"):  # off: the fingerprint of the jobs from before the option
            doc["model"].pop("uncertainty", None)
        if doc["model"].get("self_ensemble") is None:  # the weights' own: as the jobs from before the option
            doc["model"].pop("self_ensemble", None)
        if doc["tiling"].get("grid") == "aoi":  # the default: as the jobs from before the option
            doc["tiling"].pop("grid")
        doc["items"] = sorted(item_ids)
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class PlanRunConfig(JobConfig):
    """`difffusr run --plan FILE`: the job without an area or dates; each plan unit brings its own.

    `output.out` is the plan's output root; a unit writes under `ROOT/<tile_id>/<start>_<end>`.
    """

    catalog: CatalogOptions

    def unit(
        self, *, bbox: tuple[float, float, float, float], start: datetime, end: datetime, out: str, crs: str
    ) -> RunConfig:
        """The RunConfig of one unit: its bbox (lon/lat degrees), inclusive UTC dates, output and CRS."""
        return RunConfig(
            query=self.catalog.query(bbox, start, end),
            output=OutputConfig(**{**asdict(self.output), "out": out}),
            method=self.method,
            model=self.model,
            tiling=self.tiling,
            compute=self.compute,
            seed=self.seed,
            crs=crs,
        )

"""The job configuration: one frozen dataclass per concern, composed into `RunConfig`.

The resolved config is written into every output's manifest, and its pixel-relevant part fingerprints the
job so that a rerun into the same `--out` resumes it, and a different job is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from pipeline.catalog.query import SearchQuery
from pipeline.errors import ConfigError
from pipeline.inference.methods import METHODS, MethodOptions
from pipeline.io.cog import DTYPES

DEFAULT_METHOD = "difffusr"


@dataclass(frozen=True, kw_only=True)
class TilingConfig:
    """Attributes:
    core: tile core side, 10 m pixels (multiple of 6); 96 px = 960 m = 384 output pixels.
    halo: context/blend margin on each side, 10 m pixels (multiple of 6).
    """

    core: int = 96
    halo: int = 12


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
    dtype: COG data type, "uint16" (reflectance x 10000) or "float32".
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


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything `difffusr run` needs."""

    query: SearchQuery
    output: OutputConfig
    method: str = DEFAULT_METHOD
    model: MethodOptions = field(default_factory=MethodOptions)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    crs: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.model.steps < 1 or self.model.steps > 1000:
            raise ConfigError(f"--steps {self.model.steps} must be between 1 and 1000 (the schedule has T = 1000)")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))

    def fingerprint(self, item_ids: list[str]) -> str:
        """Hash of what determines the pixels: query, method, model, tiling, CRS, seed and the input items."""
        doc = self.to_dict()
        doc.pop("output")
        doc.pop("compute")
        doc["model"].pop("device", None)
        doc["items"] = sorted(item_ids)
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

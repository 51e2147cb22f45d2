"""High-resolution RGB training sources for the SR model and the synthetic LR pairs made from them.

Two kinds of folders are recognised (searched recursively):
- **Sentinel-2 scenes**: a folder holding B04, B03, B02 as `B04.tif` or `<anything>_B04.tif`, read by
  the scene-folder reader of inference (`pipeline.io.scene_files`: same radiometry, nodata = NaN). Their
  10 m RGB is the HR target; the LR input is made by the synthetic degradation x4 (Wald).
- **HR RGB images** (NAIP, WorldStrat, SEN2NAIP, ...): any other GeoTIFF with >= 3 bands; the
  first three bands are R, G, B. 8-bit DN are scaled by 1/255 and harmonised to Sentinel-2-like
  reflectance with the per-channel power law of paper eq. (9) (gammas jittered by +-10 %).
Nodata (NaN in a scene, DN 0 in an HR image) in any band excludes a pixel; patches are drawn only where
all pixels are valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.bands import RGB_BANDS
from pipeline.errors import TrainingDataError
from pipeline.io.scene_files import find_band_file, has_band_files, read_bands
from pipeline.models.degradation import (
    NAIP_TO_S2_GAMMA,
    DegradationParams,
    DegradationRanges,
    degrade,
    harmonize_power_law,
    sample_degradation,
)


@dataclass(frozen=True, kw_only=True)
class HRSource:
    """One HR image in memory.

    Attributes:
        name: file or folder it came from.
        kind: "s2" (reflectance) or "hr_rgb" (DN/255, harmonised at sampling time).
        image: (3, H, W) float32, R, G, B.
        valid: (H - p + 1, W - p + 1) bool: top-left corners of fully valid p x p patches.
    """

    name: str
    kind: str
    image: np.ndarray
    valid_corners: np.ndarray


def _read(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read()


def _valid_corners(valid: np.ndarray, patch: int) -> np.ndarray:
    """Corners (i, j) whose patch x patch window is fully valid (integral image)."""
    h, w = valid.shape
    if h < patch or w < patch:
        return np.zeros((0, 2), dtype=np.int64)
    ii = np.pad(valid.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    s = ii[patch:, patch:] - ii[:-patch, patch:] - ii[patch:, :-patch] + ii[:-patch, :-patch]
    return np.argwhere(s == patch * patch)


def discover_sources(dirs: list[str | Path], patch: int) -> list[HRSource]:
    """Load every S2 scene and HR RGB GeoTIFF under `dirs`.

    Raises:
        TrainingDataError: a folder does not exist, or no usable image (>= patch x patch valid
            pixels) is found.
    """
    sources: list[HRSource] = []
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise TrainingDataError(f"training data folder '{root}' does not exist; check --data")
        folders = [root] if root.is_dir() else []
        folders += [p for p in sorted(root.rglob("*")) if p.is_dir()] if root.is_dir() else []
        s2_files: set[Path] = set()
        for folder in folders:
            if has_band_files(folder, RGB_BANDS):
                img = read_bands(folder, RGB_BANDS)
                s2_files.update(find_band_file(folder, b) for b in RGB_BANDS)
                corners = _valid_corners(np.isfinite(img).all(0), patch)
                if len(corners):
                    sources.append(HRSource(name=str(folder), kind="s2", image=img, valid_corners=corners))
        tifs = (
            [root]
            if root.is_file()
            else sorted(p for p in root.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))
        )
        for f in tifs:
            if f in s2_files or re.fullmatch(r"(.*_)?B(0[1-9]|1[0-2]|8A)", f.stem):
                continue
            try:
                arr = _read(f)
            except Exception:  # noqa: BLE001, S112  (not a raster GDAL reads: skipped; no usable image -> error below)
                continue
            if arr.shape[0] < 3:
                continue
            img = arr[:3].astype(np.float32)
            scale = 255.0 if arr.dtype == np.uint8 else float(max(img.max(), 1.0))
            valid = (img > 0).all(0)
            corners = _valid_corners(valid, patch)
            if len(corners):
                sources.append(HRSource(name=str(f), kind="hr_rgb", image=img / scale, valid_corners=corners))
    if not sources:
        raise TrainingDataError(
            f"no usable training image under {[str(d) for d in dirs]}: "
            "expected Sentinel-2 scene folders with "
            f"B04/B03/B02 GeoTIFFs or HR RGB GeoTIFFs (>= 3 bands) of at least {patch}x{patch} valid pixels; "
            "point --data at such folders"
        )
    return sources


@dataclass(frozen=True, kw_only=True)
class PairBatch:
    """A training batch (reflectance units).

    Attributes:
        hr: (B, 3, P, P) HR target; lr: (B, 3, P/4, P/4) its degraded version;
        lr_key: (B, 3, P/4, P/4) another crop of the same source with the same degradation.
    """

    hr: torch.Tensor
    lr: torch.Tensor
    lr_key: torch.Tensor


def _augment(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = np.rot90(x, k, axes=(1, 2))
    return np.ascontiguousarray(x[:, :, ::-1] if flip else x)


def sample_pairs(
    sources: list[HRSource],
    batch: int,
    patch: int,
    ranges: DegradationRanges,
    generator: torch.Generator,
    gamma_jitter: float = 0.1,
) -> PairBatch:
    """Draw `batch` HR patches (sources weighted by area^(1/4)), two crops each, degrade both alike.

    Every random draw (source, position, rotation, flip, gammas, blur, noise) uses `generator`.
    """
    # weight ~ (number of patch positions)^(1/4): big scenes are drawn more, small patches still often
    w = torch.tensor([len(s.valid_corners) ** 0.25 for s in sources], dtype=torch.float64)
    src_idx = torch.multinomial(w, batch, replacement=True, generator=generator).tolist()
    crops_q, crops_k = [], []
    for si in src_idx:
        s = sources[si]
        pair = []
        for _ in range(2):
            i, j = s.valid_corners[int(torch.randint(len(s.valid_corners), (1,), generator=generator))]
            k = int(torch.randint(4, (1,), generator=generator))
            flip = bool(torch.randint(2, (1,), generator=generator))
            pair.append(_augment(s.image[:, i : i + patch, j : j + patch], k, flip))
        x = torch.from_numpy(np.stack(pair))  # (2, 3, P, P)
        if s.kind == "hr_rgb":
            jit = 1 + gamma_jitter * (2 * torch.rand(3, generator=generator) - 1)
            x = harmonize_power_law(x, torch.tensor(NAIP_TO_S2_GAMMA) * jit)
        crops_q.append(x[0])
        crops_k.append(x[1])
    hr = torch.stack(crops_q)
    hr_k = torch.stack(crops_k)
    params = sample_degradation(batch, ranges, generator)
    lr = degrade(hr, params, generator)
    lr_key = degrade(
        hr_k,
        DegradationParams(kernels=params.kernels, noise_sigma=params.noise_sigma, factor=params.factor),
        generator,
    )
    return PairBatch(hr=hr, lr=lr, lr_key=lr_key)

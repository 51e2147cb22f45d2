"""The Wald report's safety net: per band, each method's ERGAS against bicubic and Gram-Schmidt, flagged when
worse than bicubic (issue 14), on a bundled real held-out scene."""

from __future__ import annotations

import json

import numpy as np

from pipeline.bands import BAND_GROUPS, S2_BANDS
from pipeline.eval.protocol import WaldConfig, wald_scene
from pipeline.eval.report import (
    WORSE_FLAG,
    band_ergas_vs_baselines,
    bands_worse_than_bicubic,
    write_wald_report,
)
from pipeline.inference.scene import super_resolve_scene
from pipeline.io.scene_files import read_scene


def _superresolve(b10, b20, b60, method, *, seed=0, **kw):
    """The pipeline's methods, plus `nearest` (pixel replication: worse than bicubic on every band)."""
    if method != "nearest":
        return super_resolve_scene(b10, b20, b60, method, seed=seed, **kw)
    ups = [
        np.repeat(np.repeat(x, 4 * g.factor_to_10m, -2), 4 * g.factor_to_10m, -1)
        for x, g in zip((b10, b20, b60), BAND_GROUPS, strict=True)
    ]
    by_band = {b: u[i] for u, g in zip(ups, BAND_GROUPS, strict=True) for i, b in enumerate(g.bands)}
    return np.stack([by_band[b] for b in S2_BANDS]).astype(np.float32)


def test_per_band_ratios_flag_every_band_worse_than_bicubic(tmp_path, ireland):
    scene = read_scene(ireland)
    res = wald_scene(scene, ["bicubic", "gs", "nearest"], WaldConfig(ratio=4), superresolve=_superresolve)
    per = band_ergas_vs_baselines(res)
    assert set(per) == {"nearest"}  # the baselines are not checked against themselves
    for b, row in per["nearest"].items():
        bic = res.methods["bicubic"].bands[b]["ergas"]
        assert np.isclose(row["vs bicubic"], row["ergas"] / bic) and row["vs bicubic"] > 1.0, b
        assert np.isclose(row["vs gs"], row["ergas"] / res.methods["gs"].bands[b]["ergas"])
    worse = bands_worse_than_bicubic([res])
    assert len(worse) == 12 and {m for _, m, _ in worse} == {"nearest"}
    # gs beats bicubic on this pasture scene in every group: only nearest is flagged
    path = write_wald_report([res], WaldConfig(ratio=4), tmp_path / "r", command="test")
    report = path.read_text()
    assert "## Safety net: per band against the baselines" in report
    assert "Bands worse than bicubic: 12" in report
    assert report.count(WORSE_FLAG) == 12 + 1  # one per band row, plus the legend
    assert "| vs bicubic | gs ERGAS | vs gs |" in report
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert len(saved["bands_worse_than_bicubic"]) == 12

"""`difffusr eval wald` and `difffusr eval consistency` write a report with tables and figures."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import AssetError, ConfigError
from pipeline.eval.cli import cli_main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pngs_ok(folder):
    pngs = sorted(folder.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 2000 for p in pngs)
    return pngs


def test_eval_wald_writes_report_tables_and_figures(tmp_path, ireland, capsys):
    out = tmp_path / "wald"
    assert cli_main(["wald", str(ireland), "--methods", "gs,bicubic", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for heading in ("### 10m group", "### 20m group", "### 60m group", "### all 12 bands", "### OpenSR-test scores"):
        assert heading in report
    assert "| gs |" in report and "| bicubic |" in report and "ERGAS" in report
    names = {p.name for p in _pngs_ok(out / "figures")}
    assert {"summary_bands.png", f"{ireland.name}_crops.png", f"{ireland.name}_errors.png"} <= names
    for name in names:
        assert f"figures/{name}" in report  # every figure is linked
    results = json.loads((out / "results.json").read_text())
    assert results["ratio"] == 4
    assert set(results["scenes"][0]["methods"]["gs"]["bands"]) >= {"B01", "B8A", "B12"}
    assert "report:" in capsys.readouterr().out


def test_eval_consistency_writes_report(tmp_path, product, finland):
    out = tmp_path / "cons"
    assert cli_main(["consistency", str(product), "--inputs", str(finland), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| 10m |" in report and "| 60m |" in report and "| B09 |" in report
    assert len(_pngs_ok(out / "figures")) == 4
    assert json.loads((out / "results.json").read_text())["groups"]["20m"]["r2"] > 0.9


def test_unknown_method_is_a_config_error(tmp_path, ireland):
    with pytest.raises(ConfigError, match="lanczos"):
        cli_main(["wald", str(ireland), "--methods", "bicubic,lanczos", "--out", str(tmp_path)])


def test_missing_scene_is_an_asset_error(tmp_path):
    with pytest.raises(AssetError, match="does not exist"):
        cli_main(["wald", str(tmp_path / "nowhere"), "--methods", "bicubic", "--out", str(tmp_path / "r")])

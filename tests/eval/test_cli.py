"""`difffusr eval wald` and `difffusr eval consistency` write a report with tables and figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pngs_ok(folder):
    pngs = sorted(folder.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 2000 for p in pngs)
    return pngs


def test_eval_wald_writes_report_tables_and_figures(tmp_path, ireland, capsys):
    out = tmp_path / "wald"
    assert main(["eval", "wald", str(ireland), "--methods", "gs,bicubic", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for heading in (
        "### 10m group",
        "### 20m group",
        "### 60m group",
        "### all 12 bands",
        "### OpenSR-test scores",
    ):
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
    assert main(["eval", "consistency", str(product), "--inputs", str(finland), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| 10m |" in report and "| 60m |" in report and "| B09 |" in report
    assert len(_pngs_ok(out / "figures")) == 4
    assert json.loads((out / "results.json").read_text())["groups"]["20m"]["r2"] > 0.9


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_unknown_method_is_one_line_and_writes_nothing(tmp_path, ireland, capsys):
    out = tmp_path / "r"
    assert main(["eval", "wald", str(ireland), "--methods", "bicubic,lanczos", "--out", str(out)]) == 2
    assert "lanczos" in _error_line(capsys) and not out.exists()


def test_missing_scene_is_one_line_and_creates_no_report_folder(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["eval", "wald", str(tmp_path / "nowhere"), "--methods", "bicubic", "--out", str(out)]) == 2
    assert "does not exist" in _error_line(capsys) and not out.exists()


def test_report_folder_under_a_file_is_refused_before_the_work(tmp_path, ireland, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["eval", "wald", str(ireland), "--methods", "bicubic", "--out", str(blocker / "r")]) == 2
    assert re.search(r"cannot create report folder .* is a file", _error_line(capsys))


def test_wrong_kind_of_weights_is_refused_before_the_work(tmp_path, ireland, capsys):
    fusion = REPO / "pipeline" / "weights" / "fusion_small"
    assert (
        main(
            [
                "eval",
                "wald",
                str(ireland),
                "--methods",
                "difffusr",
                "--sr-weights",
                str(fusion),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "lacks model.safetensors" in _error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_consistency_of_a_missing_product_is_one_line(tmp_path, finland, capsys):
    out = tmp_path / "cons"
    assert (
        main(["eval", "consistency", str(tmp_path / "none.tif"), "--inputs", str(finland), "--out", str(out)])
        == 2
    )
    assert "does not exist" in _error_line(capsys) and not out.exists()

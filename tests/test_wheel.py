"""The package as a user installs it: a wheel built from the sources, installed into a fresh virtual
environment where no source tree is importable, runs from an empty folder (the packaged recipes by name,
the demo end to end).

The environment sees the test interpreter's packages, so torch and the other dependencies are not
downloaded; nothing is (``--no-index``). Marked ``slow``; ``.ci/run`` runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from wavecl.config import packaged_configs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "wavecl")
"""What the build reads; copied, so that the build's ``build/`` and ``*.egg-info`` never land in the checkout."""


def isolated_environment() -> dict[str, str]:
    """The test's environment without what would make a source tree importable, one thread per process."""
    hidden = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    return {key: value for key, value in os.environ.items() if key not in hidden} | {"OMP_NUM_THREADS": "1"}


def run(command: list[str | Path], cwd: Path) -> str:
    """Run ``command`` in ``cwd`` in :func:`isolated_environment`; returns its stdout, fails the test on an error."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=isolated_environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel`` builds from a copy of the sources, offline."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    run([*command, "-w", root / "dist", source], cwd=root)
    (built,) = (root / "dist").glob("wavecl-*.whl")
    return built


@pytest.fixture(scope="module")
def environment(wheel: Path) -> Path:
    """The ``bin`` folder of a fresh virtual environment holding the wheel, which sees this interpreter's
    packages (torch and the rest) through a ``.pth`` file: like ``--system-site-packages``, but also when
    this interpreter is itself a virtual environment's. Directories listed in a ``.pth`` file get none of
    their own ``.pth`` files run, so an editable install of the checkout stays out."""
    venv = wheel.parents[1] / "venv"
    # Without pip of its own (no ensurepip needed): this interpreter's pip installs into it.
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=wheel.parent)
    (site_packages,) = (venv / "lib").glob("python3*/site-packages")
    outer = dict.fromkeys(sysconfig.get_paths()[name] for name in ("purelib", "platlib"))
    (site_packages / "outer_packages.pth").write_text("".join(f"{folder}\n" for folder in outer))
    # --ignore-installed: an editable install of the checkout in the system site-packages must not count.
    install = ["install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel]
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", *install], cwd=wheel.parent)
    return venv / "bin"


def test_the_wheel_holds_every_packaged_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"wavecl/configs/{path.name}" for path in packaged_configs().values()} <= names
    assert len(packaged_configs()) >= 10
    assert not any(name.startswith(("tests/", "scripts/", "benchmarks/", "configs/")) for name in names)


def test_the_installed_wheel_runs_from_an_empty_folder(environment: Path, tmp_path: Path) -> None:
    where = run([environment / "python", "-c", "import wavecl; print(wavecl.__file__)"], cwd=tmp_path).strip()
    assert Path(where).is_relative_to(environment.parent), f"wavecl imported from {where}, not the environment"
    assert not Path(where).is_relative_to(REPO)

    listing = run([environment / "wavecl", "config", "list"], cwd=tmp_path)
    listed = [line.split()[0] for line in listing.splitlines() if not line.startswith("#")]
    assert listed == list(packaged_configs())

    info = run([environment / "wavecl", "info", "-c", "tiny"], cwd=tmp_path)
    assert "total" in info and "text_encoder" in info

    run([environment / "wavecl", "demo", "--minutes", "0.02", "--epochs", "1", "--out-dir", "out"], cwd=tmp_path)
    run_dir = tmp_path / "out" / "runs" / "synthetic" / "run"
    (record,) = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert record["epoch"] == 0 and 0 <= record["eval_J"] <= 1
    assert (run_dir / "checkpoints" / "last").is_file() and (run_dir / "loss_curve.png").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # nothing else written in the folder

"""A scratch copy of the workflow, run end to end once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("config.yaml")


def snakemake(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake in ``project`` with this interpreter's environment first on PATH."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def make_project(directory: Path) -> Path:
    """The repository's workflow with the tiny test config as config/config.yaml."""
    for name in ("Snakefile", "workflow", "profiles", "environment.yml"):
        (directory / name).symlink_to(ROOT / name)
    (directory / "config").mkdir()
    shutil.copy(CONFIG, directory / "config" / "config.yaml")
    return directory


@pytest.fixture(scope="session")
def finished_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test workflow after one complete `snakemake --cores 2` run."""
    # A space in the path checks that every rule quotes its paths.
    project = make_project(tmp_path_factory.mktemp("work flow"))
    snakemake(project, "--cores", "2")
    return project

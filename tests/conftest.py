"""Shared test helpers: the repository root, a copy of the workflow in a temporary folder, and the
optional shared data folder (tests that need it skip cleanly without it)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def workflow_copy(dest: Path) -> Path:
    """The workflow (Snakefile, rules, schemas, configs) copied to ``dest``; ``qd`` is the installed package."""
    shutil.copy(ROOT / "Snakefile", dest / "Snakefile")
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    shutil.copytree(ROOT / "config", dest / "config")
    shutil.copytree(ROOT / "tests" / "configs", dest / "configs")
    return dest


def env() -> dict:
    """The environment of a subprocess: the venv's scripts (qd, snakemake) first on PATH."""
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["PYTHONUNBUFFERED"] = "1"
    return e


def snakemake(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def qd(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "qd"), *args], cwd=cwd or ROOT, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def shared_data() -> Path | None:
    """``$QD_SHARED_DATA`` or ``../shared/data`` beside the checkout, when present."""
    candidate = Path(os.environ.get("QD_SHARED_DATA", ROOT.parent / "shared" / "data"))
    return candidate if candidate.is_dir() else None


@pytest.fixture
def shared() -> Path:
    path = shared_data()
    if path is None:
        pytest.skip("no shared data folder (set QD_SHARED_DATA or place it at ../shared/data)")
    return path

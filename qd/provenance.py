"""Where a result came from: code version, library versions, device."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

import qd

_ROOT = Path(__file__).resolve().parents[1]


def code_version() -> str:
    """``git describe`` of the checkout (``-dirty`` when it has uncommitted changes), else the package version."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=_ROOT,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"qd-repro {qd.__version__}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    return {
        "code_version": code_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name(device),
    }

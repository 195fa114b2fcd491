"""One GPU per training job on a multi-GPU machine: claim a free device, show the job only that one.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once but assigns no device ids
(snakemake/snakemake#281), so N concurrent ``qd train`` jobs would all land on ``cuda:0``.
``gpu_slot()`` takes the first GPU no other job holds (an exclusive, non-blocking ``flock`` on one lock
file per GPU), sets ``CUDA_VISIBLE_DEVICES`` to it for the job, and gives it back on exit. The kernel
drops a ``flock`` when its process dies, so a killed job never keeps its GPU.

    with gpu_slot(spec["train"]["device"]):     # before anything initialises CUDA
        row = execute(spec, ...)                 # sees one GPU, as cuda:0

Nothing is claimed, and the environment is left alone, when:
- ``CUDA_VISIBLE_DEVICES`` is already set: a scheduler (SLURM's ``--gpus``) or the user chose;
- fewer than two GPUs are visible: there is nothing to choose;
- the run's device is not ``auto``/``cuda``: ``cpu`` needs no GPU, ``cuda:3`` names its own.
When every GPU is held the job waits, polling, until one is free (or ``timeout`` seconds pass).
Locks live in ``$QD_GPU_LOCK_DIR``, default ``<system temp dir>/qd-gpu-locks`` (shared by all users).

Try: ``python -m qd.gpu_slots`` (prints the GPU count and which slot this process would get).
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ENV = "CUDA_VISIBLE_DEVICES"
LOCK_DIR_ENV = "QD_GPU_LOCK_DIR"


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "qd-gpu-locks")


def gpu_count() -> int:
    """GPUs on this machine, counted without initialising CUDA in this process.

    torch.cuda.device_count() may fall back to cudaGetDeviceCount, after which a change of
    CUDA_VISIBLE_DEVICES has no effect in this process; NVML (or the driver's /proc entries) does not.
    """
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        count = ctypes.c_uint(0)
        if nvml.nvmlInit_v2() == 0:
            try:
                if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0:
                    return int(count.value)
            finally:
                nvml.nvmlShutdown()
    except (OSError, AttributeError):
        pass
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


@dataclass
class GpuClaim:
    """A held GPU: its id and the open lock file that holds it."""

    device: int
    fd: int
    path: Path

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def _lock_dir(lock_dir: str | Path | None) -> Path:
    d = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    if not d.is_dir():
        d.mkdir(parents=True, exist_ok=True)
        try:  # like /tmp: every user may add lock files, none may remove another's
            d.chmod(0o1777)
        except PermissionError:
            pass
    return d


def try_claim(count: int, lock_dir: str | Path | None = None) -> GpuClaim | None:
    """The lowest GPU id in ``range(count)`` that no other holder has locked, or None if all are held."""
    d = _lock_dir(lock_dir)
    for device in range(count):
        path = d / f"gpu{device}.lock"
        # read-only is enough for flock, so a lock file another user created can still be locked
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return GpuClaim(device, fd, path)
    return None


def claim(count: int, lock_dir: str | Path | None = None, poll_seconds: float = 2.0,
          timeout: float | None = None) -> GpuClaim:
    """Wait until one of ``count`` GPUs is free and hold it; TimeoutError after ``timeout`` seconds."""
    start = time.monotonic()
    told = False
    while (held := try_claim(count, lock_dir)) is None:
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            raise TimeoutError(f"all {count} GPUs stayed busy for {waited:.0f} s "
                               f"(locks in {_lock_dir(lock_dir)})")
        if not told:
            print(f"qd: all {count} GPUs are held by other jobs; waiting for one "
                  f"(locks in {_lock_dir(lock_dir)})", file=sys.stderr)
            told = True
        time.sleep(poll_seconds)
    return held


def _cuda_already_initialised() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


@contextmanager
def gpu_slot(device: str = "auto", count: int | None = None, *, lock_dir: str | Path | None = None,
             poll_seconds: float = 2.0, timeout: float | None = None,
             env: MutableMapping[str, str] | None = None) -> Iterator[str | None]:
    """Run the block on one GPU of its own; yields the CUDA_VISIBLE_DEVICES value in effect.

    ``device`` is the run's ``train.device``; ``count`` the number of GPUs (default: counted with
    NVML); ``env`` the environment to read and set (default ``os.environ``; tests pass a dict).
    Yields the claimed id (``"2"``), the value found already set, or None when nothing was claimed.
    """
    env = os.environ if env is None else env
    if ENV in env:
        yield env[ENV]
        return
    if device not in ("auto", "cuda"):
        yield None
        return
    count = gpu_count() if count is None else count
    if count < 2:
        yield None
        return
    if env is os.environ and _cuda_already_initialised():
        raise RuntimeError("gpu_slot() must run before CUDA is initialised in this process: "
                           "CUDA_VISIBLE_DEVICES is read once, when CUDA starts")
    held = claim(count, lock_dir, poll_seconds, timeout)
    env[ENV] = str(held.device)
    try:
        yield env[ENV]
    finally:
        env.pop(ENV, None)
        held.release()


if __name__ == "__main__":
    n = gpu_count()
    print(f"{n} GPU(s) on this machine; {ENV}={os.environ.get(ENV, '<unset>')}; locks in {default_lock_dir()}")
    with gpu_slot(count=n, timeout=0) as slot:
        print(f"this process would run with {ENV}={slot}" if slot is not None else "nothing to claim")

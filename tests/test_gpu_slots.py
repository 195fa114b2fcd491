"""qd/gpu_slots.py without GPUs: the device count is given, the environment is a dict, locks in tmp_path;
the count itself is read from a stand-in NVML and /proc listing, and checked against nvidia-smi where there is one."""
import ctypes
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from qd import gpu_slots
from qd.gpu_slots import ENV, gpu_count, gpu_slot, try_claim


def test_two_concurrent_claims_get_different_gpus(tmp_path):
    env_a, env_b = {}, {}
    with gpu_slot(count=2, lock_dir=tmp_path, env=env_a) as a, gpu_slot(count=2, lock_dir=tmp_path, env=env_b) as b:
        assert (a, b) == ("0", "1")
        assert env_a[ENV] == "0" and env_b[ENV] == "1"
    assert ENV not in env_a and ENV not in env_b  # released: the variable is gone again


def test_released_gpu_is_reused(tmp_path):
    first = {}
    with gpu_slot(count=3, lock_dir=tmp_path, env={}) as held_0:
        with gpu_slot(count=3, lock_dir=tmp_path, env=first) as held_1:
            assert (held_0, held_1) == ("0", "1")
        # gpu1 is free again; gpu0 is still held, so the next claim gets 1, not 2
        with gpu_slot(count=3, lock_dir=tmp_path, env={}) as again:
            assert again == "1"
    with gpu_slot(count=3, lock_dir=tmp_path, env={}) as after_all:
        assert after_all == "0"


def test_existing_cuda_visible_devices_is_respected(tmp_path):
    env = {ENV: "3"}  # as SLURM sets it for a job given --gpus=1
    with gpu_slot(count=8, lock_dir=tmp_path, env=env) as slot:
        assert slot == "3"
        assert env == {ENV: "3"}
    assert env == {ENV: "3"}  # left as found, not removed
    assert list(tmp_path.iterdir()) == []  # and no lock was taken


def test_nothing_claimed_for_one_gpu_cpu_runs_or_a_named_device(tmp_path):
    for device, count in [("auto", 1), ("auto", 0), ("cpu", 4), ("cuda:2", 4)]:
        env = {}
        with gpu_slot(device, count=count, lock_dir=tmp_path, env=env) as slot:
            assert slot is None and env == {}
    with gpu_slot("cuda", count=2, lock_dir=tmp_path, env={}) as slot:
        assert slot == "0"


def test_waits_until_a_gpu_is_released(tmp_path):
    holder = try_claim(1, tmp_path)
    assert holder is not None and try_claim(1, tmp_path) is None
    holder_2 = try_claim(2, tmp_path)  # now both of two GPUs are held
    assert holder_2.device == 1
    threading.Timer(0.3, holder_2.release).start()
    start = time.monotonic()
    with gpu_slot(count=2, lock_dir=tmp_path, poll_seconds=0.05, env={}) as slot:
        assert slot == "1"
    assert time.monotonic() - start >= 0.25
    holder.release()


def test_timeout_when_every_gpu_stays_busy(tmp_path):
    held = [try_claim(2, tmp_path), try_claim(2, tmp_path)]
    with pytest.raises(TimeoutError, match="all 2 GPUs stayed busy"):
        with gpu_slot(count=2, lock_dir=tmp_path, poll_seconds=0.01, timeout=0.05, env={}):
            pass
    for h in held:
        h.release()


def test_lock_dies_with_its_process(tmp_path):
    """A job killed while holding a GPU does not keep it: the kernel drops the flock."""
    code = ("import sys, time; from qd.gpu_slots import try_claim; "
            f"c = try_claim(2, {str(tmp_path)!r}); print(c.device, flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "0"
        with gpu_slot(count=2, lock_dir=tmp_path, env={}) as slot:
            assert slot == "1"  # gpu0 is the child's
    finally:
        child.kill()
        child.wait()
    with gpu_slot(count=2, lock_dir=tmp_path, env={}) as slot:
        assert slot == "0"


def test_sets_and_restores_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with gpu_slot(count=2, lock_dir=tmp_path) as slot:
        assert os.environ[ENV] == slot == "0"
    assert ENV not in os.environ


class FakeNvml:
    """libnvidia-ml as ``gpu_count`` calls it: init status, a device count written through the pointer."""

    def __init__(self, count: int, init_status: int = 0):
        self.count, self.init_status, self.shut_down = count, init_status, False

    def nvmlInit_v2(self) -> int:
        return self.init_status

    def nvmlDeviceGetCount_v2(self, ref) -> int:
        ref._obj.value = self.count
        return 0

    def nvmlShutdown(self) -> int:
        self.shut_down = True
        return 0


def _machine(monkeypatch, tmp_path, nvml: FakeNvml | None, proc_gpus: list[str] | None) -> None:
    """A machine whose NVML is ``nvml`` (None: no library) and whose driver lists ``proc_gpus`` under
    /proc/driver/nvidia/gpus (None: no driver folder)."""
    def cdll(name):
        assert name == "libnvidia-ml.so.1"
        if nvml is None:
            raise OSError(f"{name}: cannot open shared object file")
        return nvml

    monkeypatch.setattr(gpu_slots, "ctypes", SimpleNamespace(CDLL=cdll, c_uint=ctypes.c_uint, byref=ctypes.byref))
    proc = tmp_path / "proc-gpus"
    if proc_gpus is not None:
        proc.mkdir(parents=True)
        for bus_id in proc_gpus:
            (proc / bus_id).mkdir()
    monkeypatch.setattr(gpu_slots, "Path",
                        lambda p, *rest: proc if str(p) == "/proc/driver/nvidia/gpus" else Path(p, *rest))


def test_gpu_count_reads_nvml_first(monkeypatch, tmp_path):
    nvml = FakeNvml(3)
    _machine(monkeypatch, tmp_path, nvml, ["0000:01:00.0"])  # NVML's count wins over the /proc listing
    assert gpu_count() == 3
    assert nvml.shut_down


def test_gpu_count_falls_back_to_the_drivers_proc_entries(monkeypatch, tmp_path):
    _machine(monkeypatch, tmp_path, FakeNvml(5, init_status=9), ["0000:01:00.0", "0000:41:00.0"])  # init fails
    assert gpu_count() == 2
    _machine(monkeypatch, tmp_path / "other", None, ["0000:01:00.0", "0000:41:00.0", "0000:81:00.0"])
    assert gpu_count() == 3


def test_gpu_count_is_zero_without_a_driver(monkeypatch, tmp_path):
    _machine(monkeypatch, tmp_path, None, None)
    assert gpu_count() == 0


def _listed_by_nvidia_smi() -> int | None:
    """GPUs ``nvidia-smi -L`` lists; 0 on a machine with no NVIDIA driver at all; None when it cannot tell."""
    if not Path("/proc/driver/nvidia").exists() and shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else None


def test_gpu_count_on_this_machine_without_touching_cuda():
    expected = _listed_by_nvidia_smi()
    if expected is None:
        pytest.skip("an NVIDIA driver folder but no working nvidia-smi to count its GPUs with")
    assert gpu_count() == expected
    torch = sys.modules.get("torch")
    assert torch is None or not torch.cuda.is_initialized()

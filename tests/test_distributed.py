"""Data-parallel building blocks (qd/distributed.py): the torchrun environment, sharding, and with two CPU
processes (gloo) the same SGD update as one process on the global batch, for a plain forward (fp), a
straight-through quantized forward with a distillation loss (qd) and learned quantization points (dq)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qd.distributed as qdist

TOL = 1e-6
# global batches of the two SGD steps: 8 (4 + 4 per rank) and 7 (4 + 3: unequal shares)
BATCHES = (8, 7)


# ------------------------------------------------------------------------------------- one process
def test_torchrun_environment():
    assert qdist.torchrun_env({}) == qdist.DistEnv()
    full = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    env = qdist.torchrun_env(full)
    assert env == qdist.DistEnv(1, 2, 1, "127.0.0.1", 29500)
    assert env.distributed and not env.is_writer
    assert qdist.torchrun_env({"WORLD_SIZE": "1", "RANK": "0"}) == qdist.DistEnv()
    with pytest.raises(ValueError, match=r"RANK=2 is outside 0..1"):
        qdist.torchrun_env({**full, "RANK": "2"})
    with pytest.raises(ValueError, match="MASTER_ADDR is not set"):
        qdist.torchrun_env({k: v for k, v in full.items() if k != "MASTER_ADDR"})
    with pytest.raises(ValueError, match="RANK is not set, though WORLD_SIZE is"):
        qdist.torchrun_env({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match=r"MASTER_PORT='x' is not an integer"):
        qdist.torchrun_env({**full, "MASTER_PORT": "x"})


def test_shard_is_strided_and_covers_the_batch():
    batch = list(range(7))
    parts = [qdist.shard(batch, r, 2) for r in range(2)]
    assert parts == [[0, 2, 4, 6], [1, 3, 5]]
    assert qdist.shard(torch.arange(5), 2, 3).tolist() == [2]
    assert qdist.shard(batch) == batch  # a single process takes everything
    with pytest.raises(ValueError, match="rank 3"):
        qdist.shard(batch, 3, 2)


def test_single_process_helpers_are_no_ops():
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    qdist.average_gradients([p], local_count=5)
    assert p.grad.tolist() == [2.0, 2.0, 2.0]
    assert qdist.max_divergence([p]) == 0.0 and qdist.is_writer() and qdist.world_size() == 1
    assert qdist.on_writer(lambda a: a + 1, 1) == 2
    assert qdist.all_reduce_sum(torch.tensor([3.0])).item() == 3.0
    assert qdist.init_process_group(qdist.DistEnv(), "cpu") == torch.device("cpu")  # joins nothing


def test_buckets_group_by_size_and_dtype(monkeypatch):
    monkeypatch.setattr(qdist, "BUCKET_ELEMENTS", 10)
    ts = [torch.zeros(4), torch.zeros(5), torch.zeros(3), torch.zeros(2, dtype=torch.float64), torch.zeros(12)]
    sizes = [[t.numel() for t in g] for g in qdist._buckets(ts)]
    assert sizes == [[4, 5], [3], [2], [12]]


# ------------------------------------------------------------------------------------- two processes
def small_net(seed: int) -> nn.Module:
    """No BatchNorm and no dropout: per-rank statistics or masks would make the ranks differ by design."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))


def global_batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    n = BATCHES[step]
    return torch.randn(n, 3, 6, 6, generator=g), torch.randint(0, 5, (n,), generator=g)


def train(method: str, seed: int, world: int = 1, rank: int = 0, reduce: bool = True) -> list[torch.Tensor]:
    """Two SGD steps (Nesterov, weight decay) of ``method``; this rank's share of each global batch."""
    from qd.distill import distillation_loss
    from qd.quant import quantile_points, quantize_nonuniform
    from qd.ste import UniformQuantizer, quantized_forward, substituted_forward

    model = small_net(seed)
    if world > 1:
        qdist.broadcast_module(model)  # every rank starts from rank 0's initialisation
    teacher = small_net(7).eval()
    names = [n for n, _ in model.named_parameters()]
    if method == "dq":
        for p in model.parameters():
            p.requires_grad_(False)
        weights = dict(model.named_parameters())
        points = [nn.Parameter(quantile_points(weights[n], 4, 16)) for n in names]
        trained = points
    else:
        trained = list(model.parameters())
    quantizers = {n: UniformQuantizer(2, 16) for n in names}
    opt = torch.optim.SGD(trained, lr=0.5, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for step in range(len(BATCHES)):
        x, y = global_batch(step)
        x, y = qdist.shard(x, rank, world), qdist.shard(y, rank, world)
        if method == "fp":
            loss = F.cross_entropy(model(x), y)
        elif method == "qd":
            with torch.no_grad():
                t = teacher(x)
            loss = distillation_loss(quantized_forward(model, quantizers, x), t, y, 2.0, 0.7, "batchmean")
        else:
            q = {n: quantize_nonuniform(weights[n], p, 16) for n, p in zip(names, points)}
            loss = F.cross_entropy(substituted_forward(model, q, x), y)
        opt.zero_grad()
        loss.backward()
        if reduce:
            qdist.average_gradients(trained, local_count=len(y))
        opt.step()
        if method == "dq":
            with torch.no_grad():
                for p in points:
                    p.copy_(torch.sort(p).values)
    return [t.detach().clone() for t in trained]


def _bn_buffers_check() -> dict:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3)
    qdist.broadcast_module(bn)
    bn(torch.randn(4, 3) + qdist.rank())  # each rank's own statistics
    before = qdist.max_divergence(bn.buffers())
    qdist.broadcast_buffers(bn)
    return {"before": before, "after": qdist.max_divergence(bn.buffers())}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    env = qdist.torchrun_env()
    device = qdist.init_process_group(env, "cpu", timeout_s=120)
    result = {"device": str(device), "backend": torch.distributed.get_backend(), "world": qdist.world_size()}
    for method in ("fp", "qd", "dq"):
        # a different seed per rank: only the broadcast makes the starting points agree
        ranked = train(method, seed=100 + rank, world=world, rank=rank)
        reference = train(method, seed=100)  # one process, the whole global batch
        local_only = train(method, seed=100, world=world, rank=rank, reduce=False)
        start = [t.detach() for t in (small_net(100).parameters())]
        result[method] = {
            "vs_single": max((a - b).abs().max().item() for a, b in zip(ranked, reference)),
            "without_reduce": max((a - b).abs().max().item() for a, b in zip(local_only, reference)),
            "moved": max((a - b).abs().max().item() for a, b in zip(reference, start))
            if method != "dq" else None,
            "across_ranks": qdist.max_divergence(ranked),
        }
    result["bn"] = _bn_buffers_check()
    result["writer"] = qdist.on_writer(lambda: Path(out, "written-by-writer").write_text(str(rank)) and rank)
    result["count"] = qdist.all_reduce_sum(torch.tensor([float(rank + 1)])).item()
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    qdist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_make_the_single_process_update(tmp_path):  # ~30 s: two fresh interpreters import torch
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in results:
        assert (r["device"], r["backend"], r["world"]) == ("cpu", "gloo", 2)
        for method in ("fp", "qd", "dq"):
            m = r[method]
            assert m["vs_single"] < TOL, (method, m)
            assert m["across_ranks"] == 0.0, (method, m)  # identical weights / points on both ranks
            assert m["without_reduce"] > 1e3 * TOL, (method, m)  # the check can fail: local steps differ
            if m["moved"] is not None:
                assert m["moved"] > 1e-2  # the steps did change the weights
        # running mean after one batch: 0.1 x the batch mean, and the ranks' batches differ by 1
        assert r["bn"]["before"] == pytest.approx(0.1, abs=1e-6) and r["bn"]["after"] == 0.0
        assert r["count"] == 3.0  # 1 + 2
    assert (tmp_path / "written-by-writer").read_text() == "0"
    assert results[0]["writer"] == 0 and results[1]["writer"] is None


# ------------------------------------------------------------------------------------- under torchrun
SCRIPT = """
import os, sys, time, torch
import qd.distributed as qdist
env = qdist.torchrun_env()
qdist.init_process_group(env, "cpu", timeout_s=30)
p = torch.nn.Parameter(torch.zeros(2))
p.grad = torch.full((2,), float(env.rank))
qdist.average_gradients([p])
print(f"rank {env.rank} of {env.world_size} local {env.local_rank} grad {p.grad.tolist()}", flush=True)
if sys.argv[1] == "kill" and env.rank == 1:
    os._exit(3)  # a rank that dies mid-job
qdist.barrier()
qdist.destroy_process_group()
"""


def torchrun(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), str(script), mode]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_under_torchrun(tmp_path):
    done = torchrun(tmp_path, "ok")
    assert done.returncode == 0, done.stderr
    assert "rank 0 of 2 local 0 grad [0.5, 0.5]" in done.stdout
    assert "rank 1 of 2 local 1 grad [0.5, 0.5]" in done.stdout


@pytest.mark.slow
def test_a_dead_rank_fails_the_torchrun_job(tmp_path):
    done = torchrun(tmp_path, "kill")
    assert done.returncode != 0
    assert "exitcode  : 3" in done.stderr or "exitcode: 3" in done.stderr, done.stderr[-2000:]

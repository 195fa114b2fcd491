"""Data-parallel training over several processes (``torchrun`` inside one workflow job; notes 2.4).

Why not ``DistributedDataParallel``: the methods' forward passes substitute tensors for a module's
parameters through ``torch.func.functional_call`` (``qd.ste``), and differentiable quantization trains
point vectors that are not parameters of the model at all. DDP's module wrapper would see neither. Here
the gradients of an explicit list of tensors are averaged after ``backward()``, so whatever a method
optimises (shadow weights, points) receives the gradient of the *global* batch on every rank, and the
optimizer steps keep all ranks identical:

    env = torchrun_env()                        # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
    device = init_process_group(env, "auto")    # gloo on CPU, nccl on CUDA (one GPU per process)
    broadcast_module(model)                     # rank 0's initial weights everywhere
    ...
    loss.backward()
    average_gradients(params, local_count=len(batch))   # weighted: uneven last batches stay exact
    optimizer.step()
    if is_writer(): save(...)                   # one process writes checkpoints, outputs and logs
    barrier()

BatchNorm statistics are computed per rank (as the official code's ``DataParallel`` did, and as DDP
does); ``broadcast_buffers`` copies rank 0's running statistics to the other ranks, e.g. before
evaluation or a checkpoint. A single process (no ``WORLD_SIZE``) needs no process group: every helper is
then a no-op, so the engine calls them unconditionally.

Exercise it with ``pytest tests/test_distributed.py`` (2 CPU processes, gloo).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# all-reduce in flat buckets of at most this many elements (64 MB of fp32): few collectives, bounded memory
BUCKET_ELEMENTS = 1 << 24
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a ``torchrun`` job (world 1 outside one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


def torchrun_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """The torchrun variables of ``environ`` (default ``os.environ``), checked; world 1 when absent."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return DistEnv()

    def integer(key: str, default: str | None = None) -> int:
        value = environ.get(key, default)
        if value is None:
            raise ValueError(f"{key} is not set, though WORLD_SIZE is: start the job with torchrun "
                             f"(which sets {', '.join(TORCHRUN_VARIABLES)})")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} is not an integer") from None

    world, rank = integer("WORLD_SIZE"), integer("RANK")
    local = integer("LOCAL_RANK", str(rank))
    if world < 1:
        raise ValueError(f"WORLD_SIZE={world} must be at least 1")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    if local < 0:
        raise ValueError(f"LOCAL_RANK={local} must not be negative")
    if world == 1:
        return DistEnv(local_rank=local)
    port = integer("MASTER_PORT")
    addr = environ.get("MASTER_ADDR")
    if not addr:
        raise ValueError("MASTER_ADDR is not set, though WORLD_SIZE > 1: start the job with torchrun")
    return DistEnv(rank, world, local, addr, port)


def process_device(env: DistEnv, requested: str = "auto") -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` (one GPU per process) or the CPU."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available")
    if env.local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK={env.local_rank} but only {torch.cuda.device_count()} GPUs are visible: "
                         "start at most one process per GPU (torchrun --nproc-per-node)")
    return torch.device("cuda", env.local_rank)


def init_process_group(env: DistEnv, requested: str = "auto", timeout_s: float = 1800) -> torch.device:
    """Join the job's process group (nccl for CUDA, gloo for CPU) and return this process's device.

    A single process joins nothing. ``timeout_s`` bounds how long a collective waits for a rank that
    died, so a killed rank fails the job instead of hanging it.
    """
    device = process_device(env, requested)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if env.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                rank=env.rank, world_size=env.world_size, timeout=timedelta(seconds=timeout_s))
    return device


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_writer() -> bool:
    """Whether this process writes checkpoints, outputs and logs (rank 0)."""
    return rank() == 0


def on_writer(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` on rank 0 only, then a barrier, so the others see what it wrote."""
    result = fn(*args, **kwargs) if is_writer() else None
    barrier()
    return result


def barrier() -> None:
    if active():
        dist.barrier()


def shard(items: Sequence, rank_: int | None = None, world: int | None = None) -> Sequence:
    """This rank's share of ``items``: positions ``rank, rank + world, ...``.

    Applied to one global batch, the shares of all ranks are the whole batch, so averaged gradients
    (weighted by the shares' sizes) equal the gradient of the global batch.
    """
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if not 0 <= rank_ < world:
        raise ValueError(f"rank {rank_} is outside 0..{world - 1}")
    return items[rank_::world]


def _buckets(tensors: list[torch.Tensor]) -> Iterable[list[torch.Tensor]]:
    """Consecutive groups of same-device, same-dtype tensors of at most ``BUCKET_ELEMENTS`` in total."""
    group, size = [], 0
    for t in tensors:
        if group and (size + t.numel() > BUCKET_ELEMENTS or t.dtype != group[0].dtype
                      or t.device != group[0].device):
            yield group
            group, size = [], 0
        group.append(t)
        size += t.numel()
    if group:
        yield group


def _all_reduce_flat(tensors: list[torch.Tensor], op=dist.ReduceOp.SUM) -> None:
    """In-place all-reduce of ``tensors`` through flat buffers (one collective per bucket)."""
    for group in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat, op=op)
        offset = 0
        for t in group:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def average_gradients(params: Iterable[torch.Tensor], local_count: int | None = None) -> None:
    """Replace each tensor's ``.grad`` by its average over ranks, after ``backward()``.

    With ``local_count`` (this rank's examples in the step) the average is weighted by the ranks'
    counts: for a loss that is a mean over the local batch, the result is the gradient of the mean over
    the global batch, even when the ranks' shares differ in size. A tensor without a gradient counts
    as zero (every rank must reduce the same list).
    """
    if not active():
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    if local_count is None:
        _all_reduce_flat(grads)
        for g in grads:
            g.div_(world_size())
        return
    device = grads[0].device if grads else torch.device("cpu")
    total = torch.tensor([float(local_count)], device=device, dtype=torch.float64)
    dist.all_reduce(total)
    for g in grads:
        g.mul_(local_count)
    _all_reduce_flat(grads)
    for g in grads:
        g.div_(total.item())


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` over ranks (e.g. correct-prediction counts of sharded evaluation)."""
    out = values.clone()
    if active():
        dist.all_reduce(out)
    return out


@torch.no_grad()
def broadcast_tensors(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` on every rank with rank ``src``'s values."""
    if not active():
        return
    for t in tensors:
        dist.broadcast(t.data if isinstance(t, torch.nn.Parameter) else t, src)


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Rank ``src``'s parameters and buffers (running statistics) on every rank, e.g. at the start."""
    broadcast_tensors(list(module.parameters()) + list(module.buffers()), src)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers on every rank (BatchNorm statistics drift apart between ranks)."""
    broadcast_tensors(list(module.buffers()), src)


@torch.no_grad()
def max_divergence(tensors: Iterable[torch.Tensor]) -> float:
    """The largest absolute difference between any rank's ``tensors`` and rank 0's (0 when identical)."""
    tensors = list(tensors)
    if not active() or not tensors:
        return 0.0
    worst = torch.zeros((), dtype=torch.float64, device=tensors[0].device)
    for t in tensors:
        ref = t.detach().clone()
        dist.broadcast(ref, 0)
        if t.numel():
            worst = torch.maximum(worst, (t.detach() - ref).abs().max().double())
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return worst.item()

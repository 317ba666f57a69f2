"""torchrun / DistributedDataParallel support (NCCL on GPUs, gloo on CPUs).

``torch.distributed`` is imported only inside these functions, never at module import.
The same ``segdiff-train`` command runs alone or under ``torchrun --nproc_per_node N``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from segdiff_core.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = "auto") -> DistContext:
    """Read torchrun's environment; start a process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device))
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_mean(value: float, ctx: DistContext) -> float:
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def any_flag(flag: bool, ctx: DistContext) -> bool:
    """True on every rank if ``flag`` is True on any rank."""
    if not ctx.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def replicas_identical(model: torch.nn.Module, ctx: DistContext) -> bool:
    """True if every rank holds bit-identical weights (compares per-rank checksums)."""
    if not ctx.enabled:
        return True
    import torch.distributed as dist

    with torch.no_grad():
        flat = torch.cat([p.detach().double().flatten().cpu() for p in model.state_dict().values()])
        sig = torch.stack([flat.sum(), (flat * torch.arange(flat.numel(), dtype=torch.float64) % 9973).sum(), flat.abs().max()])
    sig = sig.to(ctx.device if ctx.device.type == "cuda" else "cpu")
    lo, hi = sig.clone(), sig.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))


def shutdown(ctx: DistContext, barrier: bool = True) -> None:
    """Leave the process group.

    Parameters
    ----------
    ctx : DistContext
    barrier : bool
        Wait for every rank first, so no rank tears down early (after a success). After a
        failure pass False: the other ranks may never arrive, and the group is destroyed anyway.
    """
    if not ctx.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()

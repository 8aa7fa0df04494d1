"""Cross-rank reductions for data-parallel training (no-ops without torch.distributed).

Every rank computes its loss on its own shard of the batch; averaging the gradients and
every mixed Hessian-vector product makes the ranks solve the same system and take the same
step, and AND-ing the finiteness flags makes them take the same decision about it.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_data_parallel() -> bool:
    """Whether a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean(t: Tensor) -> Tensor:
    """Average a tensor across data-parallel ranks in place."""
    if is_data_parallel():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(dist.get_world_size())
    return t


def all_ranks_true(flags: Tensor) -> Tensor:
    """Element-wise AND of a bool tensor across ranks (a new tensor; no host read)."""
    if not is_data_parallel():
        return flags
    as_int = flags.to(torch.int32)  # gloo and NCCL reduce ints, not bools
    dist.all_reduce(as_int, op=dist.ReduceOp.MIN)
    return as_int.bool()


def failed_ranks(failed: bool, device: torch.device) -> list[int]:
    """The ranks on which ``failed`` is True (every rank learns all of them; one all-reduce).
    ``device``: where the collective runs (a CUDA device under NCCL)."""
    if not is_data_parallel():
        return [0] if failed else []
    flags = torch.zeros(dist.get_world_size(), dtype=torch.int32, device=device)
    flags[dist.get_rank()] = int(failed)
    dist.all_reduce(flags, op=dist.ReduceOp.SUM)
    return [r for r, f in enumerate(flags.tolist()) if f]


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not is_data_parallel():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out

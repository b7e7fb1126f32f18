"""Small helpers for ``torch.distributed`` (DDP training and sharded audits).

Everything degrades to the single-process case: ``rank() == 0``,
``world_size() == 1``, gathers return their input. A process group is created
only by :func:`init_distributed` when ``torchrun`` set ``WORLD_SIZE > 1``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from medrobust.utils.logging import get_logger

if TYPE_CHECKING:
    import torch

log = get_logger("distributed")


def launched_distributed() -> bool:
    """True when the environment (``torchrun``) asks for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def launch_rank() -> int:
    """Rank given by the launcher (``RANK``), valid before and after the process group exists."""
    return int(os.environ.get("RANK", "0"))


def is_distributed() -> bool:
    """True when a process group is initialised in this process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank (0 when not distributed)."""
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """Rank on this node (``LOCAL_RANK`` set by torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (the only rank that writes files)."""
    return rank() == 0


def init_distributed(backend: str | None = None) -> bool:
    """Initialise the default process group if torchrun launched several processes.

    Args:
        backend: "gloo" or "nccl"; default nccl when CUDA is available, else gloo.

    Returns:
        True when this call created the process group (call :func:`cleanup_distributed`
        at the end), False when running single-process or a group already existed.
    """
    if is_distributed() or not launched_distributed():
        return False
    import torch
    import torch.distributed as dist

    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    log.info("initialised %s process group: rank %d of %d", backend, rank(), world_size())
    return True


def cleanup_distributed() -> None:
    """Destroy the default process group if one exists."""
    import torch.distributed as dist

    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Synchronise all ranks (no-op single-process)."""
    import torch.distributed as dist

    if is_distributed():
        dist.barrier()


def _comm_device(tensor: torch.Tensor) -> torch.device:
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks (returns a new tensor on the input's device)."""
    import torch.distributed as dist

    if not is_distributed():
        return tensor.clone()
    t = tensor.detach().to(_comm_device(tensor)).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.to(tensor.device)


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0; sizes may differ per rank.

    Every rank receives the full result, ordered by rank.
    """
    import torch
    import torch.distributed as dist

    if not is_distributed():
        return tensor
    dev = _comm_device(tensor)
    t = tensor.detach().to(dev).contiguous()
    n = torch.tensor([t.shape[0]], device=dev, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    max_n = max(counts)
    if t.shape[0] < max_n:
        pad = torch.zeros((max_n - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=dev)
        t = torch.cat([t, pad])
    buf = [torch.empty_like(t) for _ in counts]
    dist.all_gather(buf, t)
    out = torch.cat([b[:c] for b, c in zip(buf, counts, strict=True)])
    return out.to(tensor.device)


def all_gather_object(obj: Any) -> list[Any]:
    """Gather one picklable object per rank (trusted, in-process data only)."""
    import torch.distributed as dist

    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send ``obj`` from rank ``src`` to all ranks and return it."""
    import torch.distributed as dist

    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module_state(module: torch.nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers of ``module`` from rank ``src`` to all ranks (in place)."""
    import torch
    import torch.distributed as dist

    if not is_distributed():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dev = _comm_device(t)
            buf = t.detach().to(dev).clone()
            dist.broadcast(buf, src=src)
            t.copy_(buf.to(t.device))

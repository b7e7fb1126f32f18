"""Sharding an audit over ``torch.distributed`` ranks (``torchrun --nproc_per_node N -m medrobust audit``).

The split is by *batch*: the audited samples are batched exactly as in a single process
and batch ``b`` belongs to rank ``b % world_size``. Attack seeds depend on the craft and
the batch number only, so a sharded run gives the same per-sample results as a single
process. Rank 0 alone writes the state, ``results.json`` and the reports.

Every collective here is reached by all ranks in the same order. Work between two
collectives runs inside :meth:`ShardContext.agree`, which tells every rank when one of
them failed, so a rank that raises (a bad file in its batches) never leaves the others
waiting in a collective.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from medrobust.errors import ConfigError, DataError, MedrobustError
from medrobust.utils.logging import get_logger

log = get_logger("evaluation.distributed")
T = TypeVar("T")


class ShardError(MedrobustError, RuntimeError):
    """Another rank of a sharded audit failed (its error is repeated in the message)."""


def owned_batches(n_batches: int, rank: int, world_size: int) -> list[int]:
    """Batches of rank ``rank``: ``b`` with ``b % world_size == rank``, ascending."""
    return list(range(rank, n_batches, world_size))


def _describe(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, DataError):
        return {"kind": "data", "path": exc.path, "reason": exc.reason}
    kind = "config" if isinstance(exc, ConfigError) else "other"
    return {"kind": kind, "message": f"{type(exc).__name__}: {exc}" if kind == "other" else str(exc)}


def _rebuild(desc: dict[str, Any], rank: int) -> MedrobustError:
    if desc["kind"] == "data":
        return DataError(desc["path"], desc["reason"])
    if desc["kind"] == "config":
        return ConfigError(desc["message"])
    return ShardError(f"rank {rank} of the sharded audit failed: {desc['message']}")


@dataclass
class ShardContext:
    """Where this process stands in a (possibly) sharded audit.

    Attributes:
        rank: Global rank (0 single-process).
        world_size: Number of processes (1 single-process).
        local_rank: Rank on this node (selects the CUDA device).
        backend: Backend of the default process group (``None`` single-process).
        group: Process group for object collectives (gloo; ``None`` means the default group).
        owns_group: True when :func:`open_shard_context` created the process group.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    group: Any = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the only rank that writes state, results and reports)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    def owned(self, n_batches: int) -> list[int]:
        """This rank's batches out of ``n_batches``."""
        return owned_batches(n_batches, self.rank, self.world_size)

    def all_gather(self, obj: Any) -> list[Any]:
        """One picklable object per rank, on every rank (trusted in-process data only)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def gather(self, obj: Any) -> list[Any] | None:
        """One object per rank on rank 0 (``None`` on the other ranks)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=self.group)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def agree(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on this rank, then make sure every rank succeeded.

        Returns:
            ``fn()``'s value.

        Raises:
            The rank's own error where ``fn`` raised; on the other ranks a rebuilt
            :class:`DataError`/:class:`ConfigError` or a :class:`ShardError` naming the
            failing rank, so all ranks stop together.
        """
        if not self.distributed:
            return fn()
        error: BaseException | None = None
        value: Any = None
        try:
            value = fn()
        except Exception as exc:  # reported to every rank, then re-raised below
            error = exc
        statuses = self.all_gather(None if error is None else _describe(error))
        if error is not None:
            raise error
        for r, desc in enumerate(statuses):
            if desc is not None:
                raise _rebuild(desc, r)
        return value

    def close(self, sync: bool = True) -> None:
        """Destroy the process group if this context created it.

        Args:
            sync: Wait for every rank first (after a successful run), so no rank tears
                down its connections while another still uses them; measured: without
                it, a rank aborted at exit ("terminate called without an active
                exception") in about one 2-process run in three. Skipped after an
                error, where the other ranks may never arrive.
        """
        if self.owns_group:
            from medrobust.distributed import cleanup_distributed

            if sync and self.distributed:
                import torch.distributed as dist

                dist.barrier(group=self.group)
            cleanup_distributed()
            self.owns_group = False


def open_shard_context() -> ShardContext:
    """Join the ``torchrun`` process group when launched with ``WORLD_SIZE > 1``.

    The default group uses NCCL where CUDA is available and gloo otherwise (see
    :func:`medrobust.distributed.init_distributed`); object collectives always go
    through a gloo group (NCCL cannot carry pickled objects between CPU buffers).

    Returns:
        A single-process context when not launched by torchrun (or ``WORLD_SIZE=1``).
    """
    from medrobust import distributed as mdist

    created = mdist.init_distributed()
    if not mdist.is_distributed():
        return ShardContext()
    import torch.distributed as dist

    backend = str(dist.get_backend())
    group = dist.new_group(backend="gloo") if backend != "gloo" else None
    ctx = ShardContext(
        rank=mdist.rank(),
        world_size=mdist.world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=backend,
        group=group,
        owns_group=created,
    )
    log.info("sharded audit: rank %d of %d (%s)", ctx.rank, ctx.world_size, backend)
    return ctx

"""The one training loop: epochs, AMP, DDP, early stopping, a checkpoint every epoch, resume, time estimate.

Classifier training (:func:`medrobust.models.training.train_classifier`), defense training
(:func:`medrobust.defenses.training.fit_denoiser`) and denoiser training
(:func:`medrobust.denoising.training.train_on_images`) run here; each supplies only its part:

* ``batches(ctx)``: the epoch's batches (an iterable; built from ``ctx.generator`` for shuffling);
* ``step(batch, ctx)``: the batch's loss (:class:`StepOutput`); the loop does the backward pass,
  the optimizer step (with a ``GradScaler`` when AMP runs on CUDA) and the divergence check;
* ``evaluate(ctx, train)``: the epoch's validation (:class:`Evaluation`: the metrics row, the
  score early stopping maximises and the loss that breaks ties).

The loop owns the rest. Every epoch ``e`` starts from seeds derived with
:func:`medrobust.run.seeds.derive_seed` (``seed, "epoch", e``): the loader's shuffling generator,
the torch RNG (forked, so the caller's global RNG is left as it was), a NumPy generator and the
random state of any augmentation transforms handed in, so a resumed run replays the remaining
epochs exactly. After every epoch the state (model, optimizer, scheduler, scaler, early stopping,
metric rows, best weights) is written atomically to ``RUN/checkpoint/last.pt``, a file of plain
tensors, numbers, strings, lists and dicts that ``torch.load(weights_only=True)`` reads; the file
is removed when the run ends without an error (the run folder's final files replace it) and kept
when it fails, so ``--resume`` can continue. A resume whose config differs is refused, naming the
changed fields. While training, the run folder is locked (:class:`medrobust.utils.lock.RunLock`).

>>> loop = TrainingLoop(LoopSettings(epochs=3, seed=0, run_dir=Path("runs/x"), config={"lr": 1e-3}))
>>> with loop:                                                      # doctest: +SKIP
...     result = loop.fit(model, optimizer, batches=batches, step=step, evaluate=evaluate)
...     write_final_outputs(model, result)

This module imports nothing from ``medrobust`` above ``errors``, ``utils`` and ``run`` itself:
facts (the config to compare on resume, the lr named in messages) come in as arguments.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medrobust.errors import CheckpointError, ConfigError
from medrobust.run.seeds import derive_seed
from medrobust.utils.logging import get_logger

if TYPE_CHECKING:
    import torch
    from torch import nn

log = get_logger("run.loop")

#: Folder (inside the run folder) and file name of the per-epoch checkpoint.
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_NAME = "last.pt"
#: Schema name stored in every checkpoint; bump when the layout changes.
CHECKPOINT_SCHEMA = "medrobust.training-checkpoint/1"
#: Config keys that may differ between a run and its resume (they do not change the result).
VOLATILE_KEYS = frozenset({"progress", "overwrite", "out", "resume"})
#: The time estimate is logged after this many batches of the first epoch run by a process.
ESTIMATE_AFTER_BATCHES = 3


class TrainingDivergedError(ConfigError):
    """The training loss (or the validation outputs) became NaN or infinite."""


# --------------------------------------------------------------------------- small helpers


def format_duration(seconds: float) -> str:
    """``3725.0`` -> ``"1 h 02 min"``; ``200`` -> ``"3 min 20 s"``; ``4.2`` -> ``"4.2 s"``."""
    if not math.isfinite(seconds):
        return "unknown"
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def plain(obj: Any) -> Any:
    """``obj`` as what ``torch.load(weights_only=True)`` reads: dicts, lists, str, numbers, tensors."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, Mapping):
        return {(k if isinstance(k, (str, int)) else str(k)): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a training checkpoint")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = VOLATILE_KEYS, prefix: str = ""
) -> list[str]:
    """``["lr: 0.001 -> 0.003", "arch_kwargs.width: 8 -> 16"]``: fields whose values differ.

    Nested mappings are compared field by field; top-level keys in ``ignore`` are skipped.
    """
    skip = set(ignore) if not prefix else set()
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        if key in skip:
            continue
        name = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, (), f"{name}.")
        elif plain_equal(a, b):
            continue
        else:
            out.append(f"{name}: {_short(a)} -> {_short(b)}")
    return out


def plain_equal(a: Any, b: Any) -> bool:
    """Equality of plain config values, lists and tuples alike, NaN equal to NaN."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(plain_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(plain_equal(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def reseed_random_state(obj: Any, seed: int) -> int:
    """Give every random transform reachable from ``obj`` a fresh state derived from ``seed``.

    Follows datasets (``.dataset``, ``.datasets``) and their ``.transform`` down to objects with a
    MONAI-style ``set_random_state(seed=...)`` (a ``Compose`` reseeds its own children).

    Returns:
        How many objects were reseeded.
    """
    count = 0
    seen: set[int] = set()

    def walk(item: Any, depth: int) -> None:
        nonlocal count
        if item is None or id(item) in seen or depth > 8:
            return
        seen.add(id(item))
        setter = getattr(item, "set_random_state", None)
        if callable(setter):
            setter(seed=derive_seed(seed, count) % (2**32))
            count += 1
            return
        if isinstance(item, (list, tuple)):
            for child in item:
                walk(child, depth + 1)
            return
        for name in ("dataset", "datasets", "transform"):
            child = getattr(item, name, None)
            if child is not None and not isinstance(child, (str, bytes)):
                walk(child, depth + 1)

    walk(obj, 0)
    return count


# --------------------------------------------------------------------------- distributed (torch only)


def _group() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _comm_device() -> torch.device:
    import torch

    dist = _group()
    if dist is not None and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    dist = _group()
    if dist is None:
        return tensor
    t = tensor.detach().to(_comm_device()).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.to(tensor.device)


def _broadcast_module(module: nn.Module) -> None:
    """Copy parameters and buffers from rank 0 (identical BatchNorm statistics on every rank)."""
    import torch

    dist = _group()
    if dist is None:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            buf = t.detach().to(_comm_device()).clone()
            dist.broadcast(buf, src=0)
            t.copy_(buf.to(t.device))


# --------------------------------------------------------------------------- the parts trainers supply


@dataclass
class StepOutput:
    """What a trainer's ``step`` returns for one batch.

    Attributes:
        loss: Scalar loss tensor (the loop calls ``backward`` on it).
        n: Samples in the batch (weights the epoch means).
        values: Further per-batch means to average over the epoch (``{"accuracy": 0.75}``).
    """

    loss: torch.Tensor
    n: int = 1
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Evaluation:
    """What a trainer's ``evaluate`` returns for one epoch.

    Attributes:
        row: The epoch's metrics row (``epoch`` and ``seconds`` are added by the loop).
        score: Higher is better; early stopping and best-weights keeping follow it (NaN never
            improves).
        loss: Breaks ties between equal scores (lower is better).
        metrics: Anything worth keeping with the best epoch (plain values), returned in
            :attr:`LoopResult.best_metrics`.
    """

    row: dict[str, Any]
    score: float = math.nan
    loss: float = math.nan
    metrics: dict[str, Any] | None = None


@dataclass
class EpochContext:
    """Facts of the epoch being run, handed to ``batches``, ``step`` and ``evaluate``.

    Attributes:
        epoch: 1-based epoch number.
        epochs: Planned number of epochs.
        seed: ``derive_seed(seed, "epoch", epoch)`` (plus the rank when distributed).
        generator: CPU ``torch.Generator`` for shuffling and noise, seeded from ``seed``.
        rng: NumPy generator seeded from ``seed`` (attack choices, budgets).
        lr: Learning rate of the first parameter group at the start of the epoch.
        rank: Process rank (0 single-process).
        world_size: Number of processes.
    """

    epoch: int
    epochs: int
    seed: int
    generator: torch.Generator
    rng: np.random.Generator
    lr: float
    rank: int = 0
    world_size: int = 1


@dataclass
class EpochEnd:
    """What callbacks receive after an epoch's checkpoint is written.

    Attributes:
        epoch: The epoch just finished.
        row: Its metrics row.
        improved: Whether it is the best epoch so far.
        stop: Whether early stopping ends the run after it.
        checkpoint: The checkpoint file written (None without a run folder, or on ranks > 0).
    """

    epoch: int
    row: dict[str, Any]
    improved: bool
    stop: bool
    checkpoint: Path | None


@dataclass
class LoopSettings:
    """How the loop runs.

    Attributes:
        epochs: Maximum number of epochs.
        seed: Run seed; every epoch's seeds derive from it.
        run_dir: Run folder for ``checkpoint/last.pt`` and the lock (None: no checkpoints, no lock).
        config: The run's config (plain values): stored in the checkpoint and compared on resume.
        resume: Continue from ``run_dir``'s checkpoint.
        overwrite: Start over although ``run_dir`` holds an unfinished run's checkpoint.
        patience: Stop after this many epochs without a better score (0: never).
        restore_best: Load the best epoch's weights into the model at the end.
        amp: Mixed precision (float16 autocast and a ``GradScaler``); only ever on CUDA.
        device: Where the model trains.
        progress: Show one tqdm bar over all epochs (rank 0 only).
        desc: Label of the bar and of log lines ("train", "siamese-dae").
        lr: Learning rate named in divergence messages (default: the optimizer's).
        lr_flag: How the learning rate is set (named in divergence messages).
        purpose: What the run is, for the lock's messages ("classifier training").
        volatile: Config keys allowed to differ on resume.
        keep_checkpoint: Keep ``checkpoint/last.pt`` when the run ends (default: remove it).
        callbacks: Called with an :class:`EpochEnd` after every epoch (after its checkpoint).
    """

    epochs: int
    seed: int = 0
    run_dir: Path | None = None
    config: Mapping[str, Any] | None = None
    resume: bool = False
    overwrite: bool = False
    patience: int = 0
    restore_best: bool = False
    amp: bool = False
    device: torch.device | str = "cpu"
    progress: bool = False
    desc: str = "train"
    lr: float | None = None
    lr_flag: str = "--lr"
    purpose: str = "training"
    volatile: frozenset[str] = VOLATILE_KEYS
    keep_checkpoint: bool = False
    callbacks: Sequence[Callable[[EpochEnd], None]] = ()


@dataclass
class LoopResult:
    """What :meth:`TrainingLoop.fit` returns.

    Attributes:
        rows: One metrics row per epoch (resumed runs include the epochs before the resume).
        best_epoch: Epoch with the best score (0 when no epoch had a finite score).
        best_score: Its score.
        best_metrics: ``Evaluation.metrics`` of the best epoch.
        last_metrics: ``Evaluation.metrics`` of the last epoch.
        epoch_seconds: Wall time of each epoch (validation included).
        stopped_early: Whether early stopping ended the run.
        resumed_from: Epoch the run resumed after (0: not resumed).
    """

    rows: list[dict[str, Any]]
    best_epoch: int = 0
    best_score: float = -math.inf
    best_metrics: dict[str, Any] | None = None
    last_metrics: dict[str, Any] | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from: int = 0


class EarlyStopping:
    """Track the best validation score; ties are broken by a lower validation loss.

    Args:
        patience: Stop after this many epochs without improvement (0: never stop).
    """

    def __init__(self, patience: int) -> None:
        self.patience = int(patience)
        self.best_score = -math.inf
        self.best_loss = math.inf
        self.stale = 0

    def step(self, score: float, loss: float) -> tuple[bool, bool]:
        """Record one epoch; returns ``(improved, stop)``. A NaN score never improves."""
        tie = abs(score - self.best_score) <= 1e-12
        improved = bool(score > self.best_score + 1e-12 or (tie and loss < self.best_loss))
        if improved:
            self.best_score, self.best_loss, self.stale = score, loss, 0
        else:
            self.stale += 1
        return improved, bool(self.patience and self.stale >= self.patience)

    def state_dict(self) -> dict[str, Any]:
        """Plain state for a checkpoint."""
        return {"best_score": self.best_score, "best_loss": self.best_loss, "stale": self.stale}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.best_score = float(state["best_score"])
        self.best_loss = float(state["best_loss"])
        self.stale = int(state["stale"])


# --------------------------------------------------------------------------- checkpoints


def checkpoint_path(run_dir: str | Path) -> Path:
    """``RUN/checkpoint/last.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_NAME


_REQUIRED = ("schema", "epoch", "config", "model", "optimizer", "rows", "early_stopping", "best")


def _unreadable_reason(exc: BaseException) -> str:
    """Why ``torch.load`` refused a file, in words (never the advice to load it unsafely)."""
    import pickle

    text = str(exc).strip()
    if isinstance(exc, pickle.UnpicklingError) or "weights only load failed" in text.lower():
        return (
            "it holds Python objects other than tensors, numbers, strings, lists and dicts, which are "
            "refused because unpickling them could run code"
        )
    if isinstance(exc, EOFError) or not text:
        return "the file is empty or cut short"
    if "zip archive" in text or "PytorchStreamReader" in text:
        return "the file is truncated or not a torch checkpoint"
    return f"{type(exc).__name__}: {text.splitlines()[0].split('. ')[0][:160]}"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint with ``torch.load(weights_only=True)`` (no code runs).

    Raises:
        CheckpointError: naming the file when it is unreadable or not a medrobust training checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise CheckpointError(f"{path}: the training checkpoint {what}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types; the file is what matters
        raise CheckpointError(
            f"{path}: not a readable training checkpoint ({_unreadable_reason(exc)}); delete it and start "
            "the run again without --resume."
        ) from None
    if not isinstance(state, dict) or state.get("schema") != CHECKPOINT_SCHEMA:
        got = state.get("schema") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path}: expected a training checkpoint with schema {CHECKPOINT_SCHEMA!r}. Got {got!r}."
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: the training checkpoint lacks {missing}; start the run again.")
    return state


# --------------------------------------------------------------------------- the loop


class TrainingLoop:
    """The one training loop (see the module docstring). Checks a resume when constructed.

    Use as a context manager around :meth:`fit` and the final writes: it holds the run folder's
    lock (rank 0) and, when the block ends without an error, removes the checkpoint.

    Args:
        settings: How to run.

    Raises:
        ConfigError: ``resume`` without a checkpoint, a resume whose config differs (naming the
            fields), or an unfinished run's checkpoint in ``run_dir`` without ``resume``/``overwrite``.
        CheckpointError: the checkpoint cannot be read.
    """

    def __init__(self, settings: LoopSettings) -> None:
        self.settings = settings
        self.config: dict[str, Any] = plain(dict(settings.config or {}))
        self._state: dict[str, Any] | None = None
        self._lock: Any = None
        dist = _group()
        self.rank = dist.get_rank() if dist is not None else 0
        self.world_size = dist.get_world_size() if dist is not None else 1
        self.main = self.rank == 0
        self._check_resume()

    # -- preflight -----------------------------------------------------------------------
    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint file (None without a run folder)."""
        return None if self.settings.run_dir is None else checkpoint_path(self.settings.run_dir)

    def _check_resume(self) -> None:
        s, path = self.settings, self.checkpoint
        if s.resume:
            if path is None:
                raise ConfigError(
                    "The 'resume' parameter needs a run folder ('out') to resume from. Got None."
                )
            if not path.exists():
                raise ConfigError(
                    f"--resume: {path} does not exist, so {s.run_dir} holds no unfinished run to resume "
                    "(runs that finished remove their checkpoint); start it without --resume."
                )
            state = read_checkpoint(path)
            diffs = config_differences(state.get("config") or {}, self.config, s.volatile)
            if diffs:
                raise ConfigError(
                    f"--resume: the config differs from the unfinished run's in {path} ("
                    + "; ".join(diffs)
                    + "); resume with the same settings, or start over with --overwrite or another --out."
                )
            self._state = state
        elif path is not None and path.exists() and not s.overwrite:
            raise ConfigError(
                f"{s.run_dir} holds an unfinished {s.purpose} run (checkpoint {path}); continue it with "
                "--resume, or start over with --overwrite or another --out."
            )

    # -- lock and clean-up ---------------------------------------------------------------
    def __enter__(self) -> TrainingLoop:
        run_dir = self.settings.run_dir
        if run_dir is not None and self.main:
            from medrobust.utils.lock import RunLock

            try:
                Path(run_dir).mkdir(parents=True, exist_ok=True)
                self._lock = RunLock(run_dir, self.settings.purpose).acquire()
            except OSError as exc:
                raise ConfigError(
                    f"The 'out' parameter must name a folder that can be written. Got {str(run_dir)!r} "
                    f"({exc.strerror or exc})."
                ) from None
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        try:
            if exc_type is None and self.main and not self.settings.keep_checkpoint:
                self.remove_checkpoint()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def remove_checkpoint(self) -> None:
        """Delete ``checkpoint/last.pt`` (and its folder when empty)."""
        path = self.checkpoint
        if path is None:
            return
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    # -- the loop ------------------------------------------------------------------------
    def _stop_if_diverged(self, loss: torch.Tensor, epoch: int, batch: int, lr: float) -> None:
        """Raise :class:`TrainingDivergedError` on every rank as soon as one rank's loss is not finite."""
        import torch

        value = float(loss.detach())
        bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], dtype=torch.float64)
        if self.world_size > 1:  # every rank stops together, or the others wait forever in an all-reduce
            bad = _all_reduce_sum(bad)
        if float(bad[0]) > 0:
            shown = f"{value:g}" if not math.isfinite(value) else "not finite on another process"
            raise TrainingDivergedError(
                f"training diverged at epoch {epoch}, batch {batch}: loss is {shown}; lower "
                f"{self.settings.lr_flag} (now {lr:g}) or check the data for extreme values."
            )

    def _context(self, epoch: int, optimizer: torch.optim.Optimizer) -> EpochContext:
        import torch

        s = self.settings
        keys: tuple[Any, ...] = (
            ("epoch", epoch) if self.world_size == 1 else ("epoch", epoch, "rank", self.rank)
        )
        seed = derive_seed(s.seed, *keys)
        return EpochContext(
            epoch=epoch,
            epochs=s.epochs,
            seed=seed,
            generator=torch.Generator().manual_seed(derive_seed(seed, "loader")),
            rng=np.random.default_rng(derive_seed(seed, "numpy")),
            lr=float(optimizer.param_groups[0]["lr"]),
            rank=self.rank,
            world_size=self.world_size,
        )

    def fit(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        batches: Callable[[EpochContext], Iterable[Any]],
        step: Callable[[Any, EpochContext], StepOutput | torch.Tensor],
        evaluate: Callable[[EpochContext, dict[str, float]], Evaluation] | None = None,
        scheduler: Any = None,
        on_epoch_end: Callable[[list[dict[str, Any]]], None] | None = None,
        random_objects: Sequence[Any] = (),
    ) -> LoopResult:
        """Train ``model`` for the remaining epochs and return the rows and the best epoch.

        Args:
            model: The module whose state is checkpointed and whose best weights are kept (the
                bare model, not a DDP wrapper).
            optimizer: Its optimizer.
            batches: The epoch's batches, built from ``ctx.generator``.
            step: A batch's loss (the loop runs it under autocast when AMP is on).
            evaluate: The epoch's validation; default: the row holds the training means only.
            scheduler: Stepped once per epoch (after the training batches).
            on_epoch_end: Called on rank 0 with all rows so far (write ``metrics.csv`` here).
            random_objects: Datasets/transforms whose random state is reseeded every epoch.

        Returns:
            A :class:`LoopResult`; with ``restore_best`` the model holds the best epoch's weights.
        """
        import torch
        from tqdm.auto import tqdm

        s = self.settings
        device = torch.device(s.device)
        amp = bool(s.amp and device.type == "cuda")
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        stopper = EarlyStopping(s.patience)
        result = LoopResult(rows=[])
        best_state: dict[str, torch.Tensor] | None = None
        start, stopped = 1, False
        if self._state is not None:
            best_state, start, stopped = self._restore(
                self._state, model, optimizer, scheduler, scaler, stopper, result
            )
        lr0 = s.lr if s.lr is not None else float(optimizer.param_groups[0]["lr"])
        fork_devices = [device.index or 0] if device.type == "cuda" else []
        bar = tqdm(
            total=None,
            disable=not (s.progress and self.main),
            leave=False,
            unit="batch",
            dynamic_ncols=True,
            delay=0.5,  # shown once the total over all epochs is known
        )
        estimated = False
        try:
            for epoch in range(start, s.epochs + 1):
                if stopped:
                    break
                t0 = time.perf_counter()
                ctx = self._context(epoch, optimizer)
                with torch.random.fork_rng(devices=fork_devices):
                    torch.manual_seed(derive_seed(ctx.seed, "torch"))
                    for obj in random_objects:
                        reseed_random_state(obj, derive_seed(ctx.seed, "augment"))
                    model.train()
                    iterable = batches(ctx)
                    n_batches = _length(iterable)
                    if bar.total is None and n_batches is not None:
                        bar.total = bar.n + n_batches * (s.epochs - epoch + 1)
                        bar.refresh()
                    bar.set_description(f"{s.desc} epoch {epoch}/{s.epochs}")
                    sums: dict[str, float] = {"loss": 0.0}
                    count = 0
                    for batch_no, batch in enumerate(iterable, start=1):
                        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                            out = step(batch, ctx)
                        if not isinstance(out, StepOutput):
                            out = StepOutput(loss=out)
                        self._stop_if_diverged(out.loss, epoch, batch_no, lr0)
                        optimizer.zero_grad(set_to_none=True)
                        scaler.scale(out.loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                        k = int(out.n)
                        count += k
                        sums["loss"] += float(out.loss.detach()) * k
                        for name, value in out.values.items():
                            sums[name] = sums.get(name, 0.0) + float(value) * k
                        bar.update(1)
                        bar.set_postfix(loss=f"{sums['loss'] / max(count, 1):.4g}")
                        if not estimated and batch_no in (ESTIMATE_AFTER_BATCHES, n_batches):
                            estimated = True
                            self._log_estimate(time.perf_counter() - t0, batch_no, n_batches, epoch)
                    if scheduler is not None:
                        scheduler.step()
                    train = self._epoch_means(sums, count)
                    if self.world_size > 1:
                        _broadcast_module(model)
                    evaluation = evaluate(ctx, train) if evaluate is not None else Evaluation(row=dict(train))
                seconds = time.perf_counter() - t0
                row = {"epoch": epoch, **evaluation.row, "seconds": round(seconds, 3)}
                result.rows.append(row)
                result.epoch_seconds.append(seconds)
                result.last_metrics = evaluation.metrics
                improved, stop = stopper.step(float(evaluation.score), float(evaluation.loss))
                if self.world_size > 1:  # every rank stops together
                    stop = bool(
                        float(_all_reduce_sum(torch.tensor([float(stop)], dtype=torch.float64))[0]) > 0
                    )
                if improved:
                    result.best_epoch, result.best_score = epoch, stopper.best_score
                    result.best_metrics = evaluation.metrics
                    if s.restore_best:
                        best_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
                stopped = stop
                self._log_epoch(row, result.epoch_seconds, epoch)
                if self.main and on_epoch_end is not None:
                    on_epoch_end(result.rows)
                written = self._save(
                    epoch, stop, model, optimizer, scheduler, scaler, stopper, result, best_state
                )
                end = EpochEnd(epoch=epoch, row=row, improved=improved, stop=stop, checkpoint=written)
                for callback in s.callbacks:
                    callback(end)
                if stop:
                    log.info("early stopping after epoch %d (best epoch %d)", epoch, result.best_epoch)
        finally:
            bar.close()
        result.stopped_early = stopped
        if s.restore_best and best_state is not None:
            model.load_state_dict(best_state)
        return result

    # -- pieces of fit -------------------------------------------------------------------
    def _epoch_means(self, sums: dict[str, float], count: int) -> dict[str, float]:
        import torch

        names = list(sums)
        values = torch.tensor([*(sums[k] for k in names), float(count)], dtype=torch.float64)
        if self.world_size > 1:
            values = _all_reduce_sum(values)
        total = max(float(values[-1]), 1.0)
        return {k: float(values[i]) / total for i, k in enumerate(names)}

    def _log_estimate(self, elapsed: float, done: int, n_batches: int | None, epoch: int) -> None:
        s = self.settings
        per_batch = elapsed / max(done, 1)
        if n_batches is None:
            log.info(
                "time estimate: %s per batch (the number of batches per epoch is unknown)",
                format_duration(per_batch),
            )
            return
        per_epoch = per_batch * n_batches
        remaining = s.epochs - epoch + 1
        log.info(
            "time estimate after %d batch(es): %.3g s per batch, about %s per epoch, about %s for %d "
            "epoch(s) (training only: validation adds to it; early stopping may end sooner)",
            done,
            per_batch,
            format_duration(per_epoch),
            format_duration(per_epoch * remaining),
            remaining,
        )

    def _log_epoch(self, row: dict[str, Any], seconds: list[float], epoch: int) -> None:
        left = self.settings.epochs - epoch
        eta = f" (about {format_duration(float(np.mean(seconds)) * left)} left)" if left else ""
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"
        )
        log.info("%s epoch %d/%d: %s%s", self.settings.desc, epoch, self.settings.epochs, shown, eta)

    def _save(
        self,
        epoch: int,
        stop: bool,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: torch.amp.GradScaler,
        stopper: EarlyStopping,
        result: LoopResult,
        best_state: dict[str, torch.Tensor] | None,
    ) -> Path | None:
        import torch

        path = self.checkpoint
        if path is None or not self.main:
            return None
        from medrobust.utils.io import atomic_path

        state = {
            "schema": CHECKPOINT_SCHEMA,
            "epoch": epoch,
            "epochs": self.settings.epochs,
            "stopped": bool(stop),
            "config": self.config,
            "model": plain(model.state_dict()),
            "optimizer": plain(optimizer.state_dict()),
            "scheduler": None if scheduler is None else plain(scheduler.state_dict()),
            "scaler": plain(scaler.state_dict()),
            "early_stopping": stopper.state_dict(),
            "rows": plain(result.rows),
            "epoch_seconds": [float(x) for x in result.epoch_seconds],
            "best": {
                "epoch": result.best_epoch,
                "score": float(result.best_score),
                "metrics": plain(result.best_metrics),
                "last_metrics": plain(result.last_metrics),
                "state": best_state,
            },
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

    def _restore(
        self,
        state: dict[str, Any],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: torch.amp.GradScaler,
        stopper: EarlyStopping,
        result: LoopResult,
    ) -> tuple[dict[str, torch.Tensor] | None, int, bool]:
        path = self.checkpoint
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
            if scaler.is_enabled() and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            stopper.load_state_dict(state["early_stopping"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{path}: the checkpoint does not fit this run ({type(exc).__name__}: {first}); start over "
                "with --overwrite."
            ) from None
        best = state.get("best") or {}
        result.rows = [dict(r) for r in state["rows"]]
        result.epoch_seconds = [float(x) for x in state.get("epoch_seconds") or []]
        result.best_epoch = int(best.get("epoch") or 0)
        result.best_score = float(best.get("score", -math.inf))
        result.best_metrics = best.get("metrics")
        result.last_metrics = best.get("last_metrics")
        result.resumed_from = int(state["epoch"])
        log.info(
            "resuming %s from %s after epoch %d of %d",
            self.settings.purpose,
            path,
            result.resumed_from,
            self.settings.epochs,
        )
        return best.get("state"), int(state["epoch"]) + 1, bool(state.get("stopped"))


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None

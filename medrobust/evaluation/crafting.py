"""Crafting: one attack over the batches of a craft, and the cells assembled from its pieces.

* :func:`attack_batch` attacks the still-correct samples of one batch with the craft's
  budget (image units of the card's bounds) and seed ``derive_seed(craft.seed, f"batch{b}")``,
  and records every evaluated target's predictions on the adversarial examples: a
  :class:`BatchPiece`, what a rank persists (``state/shards``) and sends to rank 0.
* :class:`CraftOutput` puts a craft's pieces back in sample order; :func:`cell_record` turns
  it into one cell (:class:`~medrobust.evaluation.results.Cell`: metrics, per-sample outcomes)
  per budget, target and threat; :func:`save_examples` keeps the gallery's images.

Nothing here knows about ranks, the run folder or resuming (:mod:`medrobust.evaluation.runner`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medrobust.evaluation.metrics import cell_metrics, effective_predictions, within_budget
from medrobust.evaluation.planning import CellSpec, Craft
from medrobust.evaluation.results import Cell, CellMetrics, SampleOutcomes
from medrobust.run.seeds import derive_seed
from medrobust.utils.io import atomic_path
from medrobust.validation import ImageUnits

if TYPE_CHECKING:
    from medrobust.evaluation.config import AttackConfig
    from medrobust.evaluation.targets import SampleBatch

PIECE_SCHEMA = "medrobust.audit-piece/2"


def jsonable(value: Any) -> Any:
    """A JSON-able copy of attack parameters and outputs (NaN → None, ±inf → "inf", tensors → numbers)."""
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else (str(value) if math.isinf(value) else value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return jsonable(value.item())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return str(value)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes ``(N,)`` and softmax probabilities ``(N, K)`` (float64) in fixed batches.

    With ``seed``, a randomised target draws its randomness from a generator seeded with it
    (its randomised modules through :func:`~medrobust.defenses.denoisers.randomized.generator_override`,
    anything else through the global torch RNG, forked and restored): one reproducible draw of
    the defense as deployed decides each sample. A deterministic model is unaffected.
    """
    from contextlib import nullcontext

    from medrobust.attacks.base import eval_mode
    from medrobust.metrics import softmax

    logits = []
    seeded: Any = nullcontext()
    override: Any = nullcontext()
    if seed is not None:
        from medrobust.defenses.denoisers.randomized import generator_override

        devices = [device] if device.type == "cuda" else []
        seeded = torch.random.fork_rng(devices=devices)
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        override = generator_override(model, gen)
    with eval_mode(model), seeded, override:
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(images), batch_size):
            logits.append(model(images[start : start + batch_size].to(device)).float().cpu())
    lg = torch.cat(logits).numpy() if logits else np.zeros((0, 2), dtype=np.float32)
    probs = softmax(lg)
    return lg.argmax(axis=1).astype(np.int64), probs


def attack_batch(
    craft: Craft,
    attack: AttackConfig,
    model: nn.Module,
    eval_models: dict[str, nn.Module],
    batch: SampleBatch,
    mask: np.ndarray,
    device: torch.device,
    keep_below: int = 0,
) -> BatchPiece:
    """Attack the ``mask``-ed samples of one batch on ``model`` and evaluate ``eval_models`` on them.

    The attack seed is ``derive_seed(craft.seed, f"batch{batch.index}")``: it depends on the
    craft and the batch number only, so results do not depend on which other batches run
    in the same process (resume, sharding).

    Args:
        craft: The craft (its seed and ε).
        attack: The attack's config.
        model: The model the attack is crafted on.
        eval_models: Targets whose predictions on the adversarial examples are recorded.
        batch: The batch (positions, images, labels).
        mask: ``(len(batch.positions),)`` bool, the samples to attack (at least one).
        device: Where the attack runs.
        keep_below: Adversarial images of positions below this are kept (saved examples).

    Returns:
        The batch's :class:`BatchPiece`.
    """
    from medrobust.attacks import create_attack

    local = np.flatnonzero(mask)
    sel = batch.positions[local]
    t0 = time.perf_counter()
    kwargs = dict(attack.params if craft.params is None else craft.params)
    if craft.eps is not None:
        kwargs["eps"] = ImageUnits(craft.eps)  # converted once with the card's bounds (planning)
    atk = create_attack(attack.name, model, seed=derive_seed(craft.seed, f"batch{batch.index}"), **kwargs)
    idx = torch.as_tensor(local)
    res = atk(batch.images[idx].to(device), batch.labels[idx].to(device))
    adv = res.adv.detach().to(batch.images.dtype).cpu()
    keep = sel < keep_below
    piece = BatchPiece(
        craft=craft.key,
        batch=batch.index,
        positions=sel.astype(np.int64),
        linf=res.linf.detach().double().cpu().numpy(),
        l2=res.l2.detach().double().cpu().numpy(),
        queries=res.queries.detach().long().cpu().numpy(),
        adv_positions=sel[keep].astype(np.int64),
        adv=adv[torch.as_tensor(np.flatnonzero(keep))].numpy().astype(np.float32),
        params=jsonable({k: v for k, v in atk.params().items() if k != "seed"}),
        info={
            **{str(k): jsonable(v) for k, v in (res.info or {}).items()},
            "uses_eot": bool(getattr(atk, "uses_eot", False)),
        },
    )
    piece.craft_seconds = time.perf_counter() - t0
    for name, target in eval_models.items():
        t1 = time.perf_counter()
        seed = derive_seed(craft.seed, f"eval{batch.index}|{name}")
        piece.pred[name], piece.probs[name] = predict(target, adv, len(adv), device, seed=seed)
        piece.eval_seconds[name] = time.perf_counter() - t1
    return piece


@dataclass
class BatchPiece:
    """The finished attack of one batch of one craft (what a rank persists and sends to rank 0).

    Attributes:
        craft: The craft's key.
        batch: Batch number.
        positions: ``(m,)`` audit positions attacked in this batch (ascending).
        linf: ``(m,)`` L∞ norms of the perturbations.
        l2: ``(m,)`` L2 norms.
        queries: ``(m,)`` model queries per sample.
        pred: Per evaluated target, ``(m,)`` raw predictions on the adversarial examples.
        probs: Per evaluated target, ``(m, K)`` float64 probabilities.
        adv_positions: Positions whose adversarial image is kept (saved examples).
        adv: ``(len(adv_positions), C, *spatial)`` float32 adversarial images.
        params: The attack's parameters (seed left out).
        info: The attack's extra outputs (JSON-able).
        craft_seconds: Time spent attacking the batch.
        eval_seconds: Per evaluated target, time spent predicting on the batch.
        craft_hash: Hash of everything the piece depends on (run fingerprint, craft, attack
            and its full parameters); a stored piece is reused only under the same hash.
    """

    craft: str
    batch: int
    positions: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    queries: np.ndarray
    pred: dict[str, np.ndarray] = field(default_factory=dict)
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    adv_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    adv: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.float32))
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    craft_seconds: float = 0.0
    eval_seconds: dict[str, float] = field(default_factory=dict)
    craft_hash: str = ""

    @property
    def targets(self) -> list[str]:
        """Evaluated targets, in order."""
        return list(self.pred)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez`` (metadata as a JSON string array, no pickles)."""
        meta = {
            "schema": PIECE_SCHEMA,
            "craft": self.craft,
            "batch": int(self.batch),
            "targets": self.targets,
            "params": self.params,
            "info": self.info,
            "craft_seconds": float(self.craft_seconds),
            "eval_seconds": {k: float(v) for k, v in self.eval_seconds.items()},
            "craft_hash": self.craft_hash,
        }
        arrays = {
            "meta": np.array(json.dumps(meta)),
            "positions": np.asarray(self.positions, dtype=np.int64),
            "linf": np.asarray(self.linf, dtype=np.float64),
            "l2": np.asarray(self.l2, dtype=np.float64),
            "queries": np.asarray(self.queries, dtype=np.int64),
            "adv_positions": np.asarray(self.adv_positions, dtype=np.int64),
            "adv": np.asarray(self.adv, dtype=np.float32),
        }
        for i, t in enumerate(self.targets):
            arrays[f"pred_{i}"] = np.asarray(self.pred[t], dtype=np.int64)
            arrays[f"probs_{i}"] = np.asarray(self.probs[t], dtype=np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Any) -> BatchPiece:
        """Inverse of :meth:`to_arrays` (``arrays``: a mapping or an open ``NpzFile``)."""
        meta = json.loads(str(arrays["meta"][()]))
        if meta.get("schema") != PIECE_SCHEMA:
            raise ValueError(f"unknown piece schema {meta.get('schema')!r}")
        targets = list(meta["targets"])
        return cls(
            craft=meta["craft"],
            batch=int(meta["batch"]),
            positions=np.asarray(arrays["positions"]),
            linf=np.asarray(arrays["linf"]),
            l2=np.asarray(arrays["l2"]),
            queries=np.asarray(arrays["queries"]),
            pred={t: np.asarray(arrays[f"pred_{i}"]) for i, t in enumerate(targets)},
            probs={t: np.asarray(arrays[f"probs_{i}"]) for i, t in enumerate(targets)},
            adv_positions=np.asarray(arrays["adv_positions"]),
            adv=np.asarray(arrays["adv"]),
            params=meta["params"],
            info=meta["info"],
            craft_seconds=float(meta["craft_seconds"]),
            eval_seconds={k: float(v) for k, v in meta["eval_seconds"].items()},
            craft_hash=str(meta.get("craft_hash", "")),
        )


class CraftOutput:
    """A craft's per-sample results over all positions, assembled from its batch pieces."""

    def __init__(self, pieces: list[BatchPiece], n: int, head: torch.Tensor) -> None:
        self.linf = np.zeros(n, dtype=np.float64)
        self.l2 = np.zeros(n, dtype=np.float64)
        self.queries = np.zeros(n, dtype=np.int64)
        self.attacked = np.zeros(n, dtype=bool)
        self.params: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.seconds = 0.0
        self.eval_seconds: dict[str, float] = {}
        self.pieces = sorted(pieces, key=lambda p: p.batch)
        self.head_adv = head.clone()  # adversarial images of the first positions (examples)
        for piece in self.pieces:
            pos = piece.positions
            self.linf[pos], self.l2[pos], self.queries[pos] = piece.linf, piece.l2, piece.queries
            self.attacked[pos] = True
            if not self.params:
                self.params = dict(piece.params)
            for key, value in piece.info.items():
                self.info.setdefault(key, value)
            self.seconds += piece.craft_seconds
            for name, sec in piece.eval_seconds.items():
                self.eval_seconds[name] = self.eval_seconds.get(name, 0.0) + sec
            if len(piece.adv_positions):
                self.head_adv[torch.as_tensor(piece.adv_positions)] = torch.from_numpy(piece.adv)

    def raw_predictions(
        self, target: str, clean_pred: np.ndarray, clean_probs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``target``'s predictions on the adversarial examples (clean ones where not attacked)."""
        pred, probs = clean_pred.copy(), clean_probs.copy()
        for piece in self.pieces:
            pred[piece.positions], probs[piece.positions] = piece.pred[target], piece.probs[target]
        return pred, probs


def save_examples(
    path: Path,
    head: torch.Tensor,
    craft_out: CraftOutput,
    target: nn.Module,
    device: torch.device,
) -> None:
    """Save the first positions' clean, adversarial (and denoised) images for the report's gallery."""
    k = len(head)
    arrays = {
        "positions": np.arange(k, dtype=np.int64),
        "clean": head.numpy().astype(np.float32),
        "adv": craft_out.head_adv[:k].numpy().astype(np.float32),
        "attacked": craft_out.attacked[:k],
    }
    den = getattr(target, "denoiser", None)
    if den is not None and k:
        from medrobust.attacks.base import eval_mode

        with torch.no_grad(), eval_mode(den):
            arrays["denoised_adv"] = den(craft_out.head_adv[:k].to(device)).float().cpu().numpy()
            arrays["denoised_clean"] = den(head.to(device)).float().cpu().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def cell_record(
    cell: CellSpec,
    craft: Craft,
    craft_out: CraftOutput,
    labels_np: np.ndarray,
    clean: tuple[np.ndarray, np.ndarray],
    raw: tuple[np.ndarray, np.ndarray],
    indices: list[int],
    num_classes: int,
    positive: int | None,
    *,
    gradient_free: bool,
    bpda: bool,
    eval_seconds: float,
    examples: str | None,
) -> Cell:
    """One cell's record (metrics and per-sample outcomes), as results.json and the state store it."""
    cpred, cprobs = clean
    raw_pred, raw_probs = raw
    assert cell.eps is not None, "plan the audit with the card's bounds before assembling cells"
    norms = craft_out.linf if cell.norm == "linf" else craft_out.l2
    adv_pred, adv_probs, used = effective_predictions(
        labels_np, cpred, cprobs, raw_pred, raw_probs, craft_out.attacked, norms, cell.eps
    )
    over = int((craft_out.attacked & ~within_budget(norms, cell.eps)).sum())
    metrics = cell_metrics(
        labels_np,
        cpred,
        cprobs,
        adv_pred,
        adv_probs,
        craft_out.linf,
        craft_out.l2,
        craft_out.queries,
        craft_out.attacked,
        num_classes,
        positive,
    )
    fooled = (cpred == labels_np) & (adv_pred != labels_np)
    return Cell(
        id=cell.id,
        key=cell.key,
        target=cell.target,
        threat=cell.threat,
        attack=cell.attack,
        attack_name=cell.attack_name,
        norm=cell.norm,
        eps=None if math.isinf(cell.eps) else cell.eps,
        eps_label=cell.eps_label,
        minimal=cell.minimal,
        gradient_free=gradient_free,
        craft=craft.key,
        craft_on=craft.craft_on,
        seed=craft.seed,
        bpda=bpda,
        params=jsonable(craft_out.params),
        info=craft_out.info,
        metrics=CellMetrics.from_dict(metrics),
        n_over_budget=over if not cell.minimal else 0,
        seconds=craft_out.seconds + eval_seconds,
        craft_seconds=craft_out.seconds,
        eval_seconds=eval_seconds,
        examples=examples,
        eot=None if gradient_free else bool(craft_out.info.get("uses_eot", False)),
        samples=SampleOutcomes(
            position=list(range(len(labels_np))),
            index=list(indices),
            label=labels_np.tolist(),
            clean_pred=cpred.tolist(),
            adv_pred=adv_pred.tolist(),
            adv_raw_pred=raw_pred.tolist(),
            success=fooled.tolist(),
            used_adv=used.tolist(),
            attacked=craft_out.attacked.tolist(),
            linf=craft_out.linf.tolist(),
            l2=craft_out.l2.tolist(),
            queries=craft_out.queries.tolist(),
            adv_probs=adv_probs.tolist(),
        ),
    )

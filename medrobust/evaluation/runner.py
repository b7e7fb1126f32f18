"""Running an audit: config → data + model (+ defenses) → crafts → cells → results.json → report.

This module orchestrates (ranks, run folder, lock, resume state, progress); what runs is
decided by :mod:`~medrobust.evaluation.planning` (crafts, cells, keys, what is reused), an
attack over a craft's batches and the cells built from it by
:mod:`~medrobust.evaluation.crafting`, and what is written by the typed schema of
:mod:`~medrobust.evaluation.results`.

Flow of :func:`run_audit` (each step one call a reader can follow):

1. :func:`~medrobust.evaluation.planning.plan_audit` lists crafts and cells (pure config);
   once the model card is read, the budgets are converted to its image units (the cells'
   keys and seeds do not change).
2. Rank 0 claims the run folder: ``--out`` must be (or become) a writable folder, and a
   lock file (:class:`~medrobust.utils.lock.RunLock`) keeps a second audit out of it; a
   resume whose run-level settings changed is refused here already.
3. The classifier and defended targets are loaded and the samples opened
   (:func:`~medrobust.evaluation.targets.open_audit_data`): images are *streamed* in fixed
   batches of global sample positions, never held all at once; only per-sample arrays
   (labels, predictions, norms) stay in memory. Clean predictions are computed batch-wise
   once per target; model sanity checks run on the first 8 samples. Rank 0 hashes every
   input (model weights and card, defenses, the data files read) and opens the resume state
   (:class:`~medrobust.evaluation.state.AuditState`), which refuses changed inputs; each
   cell's key covers its attack's full parameters, so a changed attack list only adds,
   keeps or recomputes the cells concerned.
4. Each craft attacks, batch by batch, only the samples that some evaluated target
   classifies correctly (the others cannot become robust); batch ``b`` has its own seed
   ``derive_seed(craft.seed, f"batch{b}")``. Each finished (craft, batch) *piece* is
   persisted (``state/shards``) and the craft's cells are assembled from the pieces and
   saved as they complete.
5. With the ``certified`` threat, every target is smoothed and certified
   (:mod:`~medrobust.evaluation.certified`).
6. Results checks (flags), gates, ``results.json`` and the reports are written.

Randomised targets (declared ``stochastic`` or two passes on the same batch differ) are found
right after loading; the plan is made again with them (``eot: auto``), with the BPDA targets
and the image size (``protocol: defense``). Every prediction of a target (clean and on
adversarial examples) is one draw from a generator seeded per batch and target, so a
randomised target's outcomes are reproducible. The clean pass also takes each sample's input
gradient through every target (the useless-gradient check over all samples).

Sharding: launched by ``torchrun --nproc_per_node N -m medrobust audit ...``, batch ``b``
goes to rank ``b % N`` (:mod:`medrobust.evaluation.distributed`); pieces are gathered on
rank 0, which alone writes state, results and reports. Since seeds depend on the craft
and the batch only, a sharded run gives the same per-sample results as a single process.

Per-sample results are first-class: every cell keeps, per sample position, the label,
clean and effective adversarial predictions, success, norms and queries.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust import __version__
from medrobust.evaluation.audited import audited_data_summary, import_summary
from medrobust.evaluation.config import BARE, CERTIFIED, AuditConfig, dump_config
from medrobust.evaluation.crafting import (
    BatchPiece,
    CraftOutput,
    attack_batch,
    cell_record,
    jsonable,
    predict,
    save_examples,
)
from medrobust.evaluation.distributed import ShardContext, open_shard_context
from medrobust.evaluation.flags import (
    gradient_summary,
    input_gradient_norms,
    is_randomised,
    run_model_checks,
    run_results_checks,
)
from medrobust.evaluation.gate import check_gate_metrics, check_gates_match, parse_gate
from medrobust.evaluation.metrics import prediction_metrics
from medrobust.evaluation.planning import (
    AuditPlan,
    Craft,
    cells_done,
    pending_crafts,
    plan_audit,
    plan_keys,
    safe_id,
)
from medrobust.evaluation.progress import AuditProgress, attack_cost, craft_label
from medrobust.evaluation.results import (
    SCHEMA,
    AttackInfo,
    AuditDocument,
    BudgetValues,
    Cell,
    CleanMetrics,
    DataInfo,
    ModelInfo,
    Provenance,
    TargetInfo,
)
from medrobust.evaluation.state import AuditState, PieceStore, audit_provenance, run_fingerprint
from medrobust.evaluation.targets import (
    AuditSamples,
    build_targets,
    describe_target,
    load_classifier,
    open_audit_data,
)
from medrobust.evaluation.verdict import complete_results
from medrobust.run.seeds import derive_seed
from medrobust.utils.lock import RunLock, claim_run_folder
from medrobust.utils.logging import get_logger

#: Files of a finished audit that ``fresh=True`` removes with the state (besides examples and plots).
OUTPUT_FILES = (
    "results.json",
    "results.csv",
    "report.md",
    "report.html",
    "config.resolved.yaml",
    "environment.json",
)
log = get_logger("evaluation")


def _environment(config: AuditConfig, device: torch.device, ctx: ShardContext) -> dict[str, Any]:
    from medrobust.run.environment import environment

    return environment(
        device, config.seed, world_size=ctx.world_size, backend=ctx.backend, num_workers=config.num_workers
    )


def _resolve_device(config: AuditConfig, ctx: ShardContext) -> torch.device:
    """The configured device; in a sharded CUDA run an unnumbered ``cuda`` means this rank's GPU."""
    from medrobust.utils.device import resolve_device

    device = resolve_device(config.device)
    if ctx.distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank)
    return device


def run_audit(
    config: AuditConfig, out: str | Path, *, fresh: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) an audit into ``out`` and write results.json and the reports.

    Launched by ``torchrun`` (``WORLD_SIZE > 1``), every rank calls this: the batches are
    sharded over the ranks (batch ``b`` on rank ``b % world_size``), rank 0 gathers the
    per-sample results and alone writes the state, results and reports. The per-sample
    results equal a single-process run's.

    While it runs, ``out`` is locked (``out/medrobust.lock``, taken by rank 0 before anything
    is read or wiped, released on return and on error): a second audit on the same folder
    is refused; a lock left by a dead process on this host is taken over.

    Args:
        config: A validated :class:`AuditConfig`.
        out: Run folder (created). An existing run of the same run-level settings and input
            files is resumed: finished cells whose key is unchanged are kept (attacks, budgets
            and threats may be added or removed), finished (craft, batch) pieces are reused,
            also by a sharded run.
        fresh: Discard an existing run (state, results, reports, examples) instead of resuming
            (needed after a change of data, model, defenses, seed or sample count, or of the
            files behind them).
        progress: Show a progress bar (rank 0 only): model evaluations weighted by each attack's
            cost, advanced per attacked batch, labelled with attack, budget and threat model;
            work a resumed run reuses is left out of the total (:mod:`~medrobust.evaluation.progress`).

    Returns:
        The results dict written to ``out/results.json`` (schema ``medrobust.audit/1``); every
        rank of a sharded run receives it. Its ``provenance`` holds the SHA-256 and size of
        every input file.

    Raises:
        ConfigError: invalid gates, a gate matching no cell, an unusable or locked ``out``, a
            corrupt ``state.json``, or changed run settings or input files without ``fresh``
            (the one-line message names what changed).
        DataError: a bad file, or images outside the model card's bounds (naming the source).
    """
    plan: AuditPlan = plan_audit(config)  # names only: the budgets' image units need the card
    gates = [parse_gate(g) for g in config.gates]
    check_gates_match(gates, [c.as_dict() for c in plan.cells + plan.certified])  # before anything is written
    ctx = open_shard_context()
    out = Path(out)
    locks: list[RunLock] = []
    finished = False

    def claim() -> None:
        # Only rank 0 writes the folder, so it alone takes the lock; the other ranks trust it.
        if ctx.is_main:
            locks.append(claim_run_folder(out, "audit"))
            if not fresh:  # a corrupt state.json or changed settings: refused before any loading
                AuditState.precheck(out, config.run_inputs())

    try:
        ctx.agree(claim)
        results = _run_audit(config, plan, gates, out, fresh, progress, ctx)
        finished = True
        return results
    finally:
        for lock in locks:
            lock.release()
        ctx.close(sync=finished)


def _wipe_outputs(out: Path) -> None:
    """Remove a previous run's results, reports, plots and examples (``fresh=True``)."""
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    for folder, pattern in (("examples", "*.npz"), ("plots", "*.png")):
        for stale in (out / folder).glob(pattern):
            stale.unlink()


def _run_audit(
    config: AuditConfig,
    plan: AuditPlan,
    gates: list[Any],
    out: Path,
    fresh: bool,
    progress: bool,
    ctx: ShardContext,
) -> dict[str, Any]:
    resolved = config.resolved()
    examples_dir = out / "examples"
    device = _resolve_device(config, ctx)

    def load() -> tuple[Any, AuditSamples, dict[str, nn.Module]]:
        classifier = load_classifier(config, device)
        samples = open_audit_data(config, classifier.card)
        return classifier.card, samples, build_targets(config, classifier, device)

    card, samples, targets = ctx.agree(load)
    check_gate_metrics(gates, card.num_classes)  # descriptive metrics refused before any attack
    n_check = min(8, len(samples))

    def detect() -> set[str] | None:
        if not ctx.is_main:
            return None
        head_x, _ = samples.read(range(n_check))
        return {name for name, model in targets.items() if is_randomised(model, head_x.to(device))}

    stochastic: set[str] = set(ctx.broadcast(ctx.agree(detect)) or ())
    bpda = {name for name, model in targets.items() if name != BARE and getattr(model, "uses_bpda", False)}
    image_size = config.data.size or list(getattr(card, "spatial_size", None) or [])
    # The budgets in image units of the card's bounds: converted here, once, for every rank.
    plan = plan_audit(
        config, tuple(float(b) for b in card.bounds), stochastic=stochastic, bpda=bpda, image_size=image_size
    )

    def open_state() -> AuditState | None:
        if not ctx.is_main:
            return None
        provenance = audit_provenance(config, samples)
        run_inputs = config.run_inputs()
        state = AuditState(
            out, run_fingerprint(run_inputs, provenance), run_inputs, provenance, resolved, fresh=fresh
        )
        if fresh:
            _wipe_outputs(out)
        examples_dir.mkdir(parents=True, exist_ok=True)
        return state

    # Rank 0 checks the inputs and opens (or clears) the state before any rank writes a piece.
    state = ctx.agree(open_state)
    run_fp = ctx.broadcast(state.fingerprint if state is not None else None)
    attacks = plan.attacks(config)
    keys = plan_keys(plan, config, run_fp)
    if state is not None:
        state.expect(keys.cell_keys)  # finished cells under another key are recomputed
    pending = set(ctx.broadcast(pending_crafts(plan, state.has) if state is not None else None))
    store = state.pieces if state is not None else PieceStore(out)
    specs = {d.name: d for d in config.defenses}
    positive = card.positive_index
    num_classes = card.num_classes
    n = len(samples)
    k_examples = min(config.save_examples, n)

    # Clean predictions, batch-wise on each rank's batches; model checks on rank 0.
    def clean_pass() -> tuple[list[tuple[Any, ...]], torch.Tensor | None, list[Any] | None]:
        rows = []
        for batch in samples.batches(ctx.owned(samples.n_batches)):
            preds = {
                name: predict(
                    model,
                    batch.images,
                    config.batch_size,
                    device,
                    seed=derive_seed(config.seed, f"clean{batch.index}|{name}"),
                )
                for name, model in targets.items()
            }
            grads = {
                name: input_gradient_norms(model, batch.images.to(device), batch.labels.to(device))
                for name, model in targets.items()
            }
            rows.append(
                (batch.index, batch.labels.numpy(), batch.ids, list(batch.images.shape[2:]), preds, grads)
            )
        if not ctx.is_main:
            return rows, None, None
        head, head_labels = samples.read(range(max(n_check, k_examples)))
        checks = []
        for name, model in targets.items():
            checks += run_model_checks(
                name, model, head[:n_check].to(device), head_labels[:n_check].to(device)
            )
        return rows, head[:k_examples], checks

    local_rows, head, flags = ctx.agree(clean_pass)
    rows = sorted((r for part in ctx.all_gather(local_rows) for r in part), key=lambda r: r[0])
    del local_rows
    labels_np = np.concatenate([r[1] for r in rows]).astype(np.int64)
    ids = [i for r in rows for i in r[2]]
    clean: dict[str, tuple[np.ndarray, np.ndarray]] = {
        name: (
            np.concatenate([r[4][name][0] for r in rows]),
            np.concatenate([r[4][name][1] for r in rows]),
        )
        for name in targets
    }
    grad_norms = {name: np.concatenate([r[5][name] for r in rows]) for name in targets}
    spatial_size = rows[0][3]
    del rows

    crafts = _CraftRunner(
        config, ctx, samples, targets, store, state, clean, labels_np, head, device, examples_dir
    )
    crafts.craft_hashes, crafts.cell_keys = keys.craft_hashes, keys.cell_keys
    crafts.attacks = attacks
    # Progress in model evaluations (cost-weighted), this rank's batches only; reused work is left out.
    crafts.costs = {
        k.key: attack_cost(
            attacks[k.attack].name, {**attacks[k.attack].full_params(), **(k.params or {})}, num_classes
        )
        for k in plan.crafts
    }
    done = cells_done(plan, pending, state.has) if state is not None else 0
    crafts.progress = AuditProgress(
        sum(crafts.work(k) for k in plan.crafts if k.key in pending),
        len(plan.cells),
        done,
        enabled=progress and ctx.is_main,
    )
    for craft in plan.crafts:
        if craft.key not in pending:
            continue
        crafts.progress.start(craft_label(craft, list(config.threats) if config.defenses else []))
        gathered = ctx.gather(ctx.agree(partial(crafts.run_batches, craft)))
        ctx.agree(partial(crafts.finish, craft, gathered))
    crafts.progress.close()
    certificates = None
    if plan.certified:
        from medrobust.evaluation.certified import run_certify

        certificates = ctx.agree(
            partial(run_certify, config, plan.certified, targets, samples, ctx, device, out, run_fp)
        )

    def finalize() -> dict[str, Any] | None:
        if not ctx.is_main:
            return None
        assert state is not None
        from medrobust.reporting import write_reports
        from medrobust.utils.io import atomic_write_json, atomic_write_text

        target_info = []
        for name, model in targets.items():
            info = TargetInfo.from_dict(describe_target(name, model, specs.get(name)))
            pred, probs = clean[name]
            info.clean = CleanMetrics.from_dict(
                {
                    **prediction_metrics(labels_np, pred, probs, num_classes, positive),
                    "pred": pred.tolist(),
                    "probs": probs.tolist(),
                }
            )
            info.stochastic = name in stochastic
            info.gradient_check = gradient_summary(grad_norms[name])
            target_info.append(info)
        cells = [Cell.from_dict(state.load(c.id)) for c in plan.cells]
        base_flags = list(flags or []) + run_results_checks(cells, target_info)
        doc = AuditDocument(
            schema=SCHEMA,
            medrobust_version=__version__,
            name=config.name,
            fingerprint=config.fingerprint(),
            provenance=Provenance.from_dict({"run_fingerprint": state.fingerprint, **state.provenance}),
            seed=config.seed,
            config=resolved,
            data=DataInfo.from_dict(
                {
                    **samples.describe,
                    "spatial_size": spatial_size,
                    "n": n,
                    "class_names": list(card.class_names),
                    "positive_class": card.positive_class,
                    "indices": list(samples.indices),
                    "ids": ids,
                    "labels": labels_np.tolist(),
                    **audited_data_summary(samples, labels_np, list(card.class_names)),
                }
            ),
            model=ModelInfo.from_dict(
                {
                    "path": str(config.model.path),
                    "card": card.model_dump(mode="json"),
                    "import": import_summary(targets[BARE], card),
                }
            ),
            bounds=[float(b) for b in card.bounds],
            targets=target_info,
            threats=["whitebox", *config.threats]
            if config.defenses
            else ["whitebox", *(t for t in config.threats if t == CERTIFIED)],
            attacks=[
                AttackInfo(
                    label=a.label, name=a.name, norm=a.norm, minimal=a.minimal, params=jsonable(a.params)
                )
                for a in attacks.values()
            ],
            budgets=BudgetValues(**{norm: [b.value for b in plan.budgets[norm]] for norm in ("linf", "l2")}),
            cells=cells,
            flags=base_flags,
            gates=[],
            notes=list(config.notes),
        )
        if certificates is not None:
            from medrobust.evaluation.certified import certified_records

            doc.certified = certified_records(config, plan.certified, labels_np, certificates)
        complete_results(doc, gates, base_flags)  # intervals, audit flags, worst cases, gates, verdict
        atomic_write_text(out / "config.resolved.yaml", dump_config(config))
        atomic_write_json(out / "environment.json", _environment(config, device, ctx))
        write_reports(doc, out)
        return doc.to_dict()

    return ctx.broadcast(ctx.agree(finalize))


class _CraftRunner:
    """Runs crafts batch by batch on this rank's batches and, on rank 0, assembles their cells."""

    def __init__(
        self,
        config: AuditConfig,
        ctx: ShardContext,
        samples: AuditSamples,
        targets: dict[str, nn.Module],
        store: PieceStore,
        state: AuditState | None,
        clean: dict[str, tuple[np.ndarray, np.ndarray]],
        labels: np.ndarray,
        head: torch.Tensor | None,
        device: torch.device,
        examples_dir: Path,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.samples = samples
        self.targets = targets
        self.store = store
        self.state = state
        self.clean = clean
        self.labels = labels
        self.head = head
        self.device = device
        self.examples_dir = examples_dir
        self.attacks = {a.label: a for a in config.attacks}  # the runner adds the protocol's
        self.keep_below = min(config.save_examples, len(labels))
        self.progress: AuditProgress | None = None
        self.costs: dict[str, float] = {}
        self.craft_hashes: dict[str, str] = {}
        self.cell_keys: dict[str, str] = {}
        card = targets[BARE].card  # type: ignore[union-attr]
        self.num_classes = card.num_classes
        self.positive = card.positive_index

    def subset(self, craft: Craft) -> np.ndarray:
        """Samples some target the craft is evaluated on classifies correctly (the attacked ones)."""
        subset = np.zeros(len(self.labels), dtype=bool)
        for t in craft.eval_targets:
            subset |= self.clean[t][0] == self.labels
        return subset

    def work(self, craft: Craft) -> float:
        """Model evaluations ``craft`` costs on this rank's batches (progress bar units)."""
        subset = self.subset(craft)
        owned = [self.samples.positions(b) for b in self.ctx.owned(self.samples.n_batches)]
        return self.costs.get(craft.key, 1.0) * float(sum(int(subset[p].sum()) for p in owned))

    def _progress(self, craft: Craft, mask: np.ndarray, reused: bool) -> None:
        if self.progress is not None and self.ctx.is_main:
            work = self.costs.get(craft.key, 1.0) * float(mask.sum())
            (self.progress.reused if reused else self.progress.advance)(work)

    def run_batches(self, craft: Craft) -> list[BatchPiece]:
        """This rank's pieces of ``craft``: reused from ``state/shards`` or attacked and saved."""
        ctx, samples, store = self.ctx, self.samples, self.store
        craft_id = safe_id(craft.key)
        subset = self.subset(craft)
        eval_models = {t: self.targets[t] for t in craft.eval_targets}
        pieces, todo = [], []
        for b in ctx.owned(samples.n_batches):
            if not subset[samples.positions(b)].any():
                continue  # nothing to attack in this batch
            piece = store.load(craft_id, craft.key, b, craft.eval_targets, self.craft_hashes.get(craft.key))
            if piece is None:
                todo.append(b)
            else:
                pieces.append(piece)
                self._progress(craft, subset[samples.positions(b)], reused=True)
        reused = len(pieces)
        for batch in samples.batches(todo):
            piece = attack_batch(
                craft,
                self.attacks[craft.attack],
                self.targets[craft.craft_on],
                eval_models,
                batch,
                subset[batch.positions],
                self.device,
                keep_below=self.keep_below,
            )
            piece.craft_hash = self.craft_hashes.get(craft.key, "")
            store.save(craft_id, piece)
            pieces.append(piece)
            self._progress(craft, subset[batch.positions], reused=False)
        log.info(
            "rank %d, craft %s: %d batch(es) attacked, %d reused from %s",
            ctx.rank,
            craft.key,
            len(todo),
            reused,
            store.dir / craft_id,
        )
        return pieces

    def finish(self, craft: Craft, gathered: list[list[BatchPiece]] | None) -> None:
        """Rank 0: assemble ``craft``'s pieces into its pending cells and save them (and examples)."""
        if not self.ctx.is_main:
            return
        state, head, config = self.state, self.head, self.config
        assert state is not None and gathered is not None and head is not None
        atk_cfg = self.attacks[craft.attack]
        craft_out = CraftOutput([p for part in gathered for p in part], len(self.labels), head)
        pending = [c for c in craft.cells if not state.has(c.id)]
        gradient_free = bool(getattr(atk_cfg.attack_class, "gradient_free", False))
        bpda = craft.craft_on != BARE and bool(getattr(self.targets[craft.craft_on], "uses_bpda", False))
        for tname in dict.fromkeys(c.target for c in pending):
            t0 = time.perf_counter()
            cpred, cprobs = self.clean[tname]
            raw = craft_out.raw_predictions(tname, cpred, cprobs)
            ex_name = f"{safe_id(craft.key + '|' + tname)}.npz"
            if config.save_examples:
                save_examples(self.examples_dir / ex_name, head, craft_out, self.targets[tname], self.device)
            eval_seconds = craft_out.eval_seconds.get(tname, 0.0) + time.perf_counter() - t0
            for cell in (c for c in pending if c.target == tname):
                record = cell_record(
                    cell,
                    craft,
                    craft_out,
                    self.labels,
                    (cpred, cprobs),
                    raw,
                    self.samples.indices,
                    self.num_classes,
                    self.positive,
                    gradient_free=gradient_free,
                    bpda=bpda,
                    eval_seconds=eval_seconds,
                    examples=f"examples/{ex_name}" if config.save_examples else None,
                )
                record.cell_fingerprint = self.cell_keys.get(cell.id)
                state.save(cell.id, record.to_dict())
                if self.progress is not None:
                    self.progress.cells_finished()

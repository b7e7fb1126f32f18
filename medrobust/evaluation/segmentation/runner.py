"""Running a segmentation audit: segmenter (+ defenses) + image/mask pairs → cells → results → report.

Flow of :func:`run_segmentation_audit` (conventions of :mod:`medrobust.evaluation.runner`):

1. :func:`~.planning.plan_segmentation_audit` lists crafts and cells (names only).
2. ``--out`` is claimed: a writable folder with a lock file (:class:`~medrobust.utils.lock.RunLock`);
   a resume whose run-level settings changed is refused before anything is loaded.
3. The segmenter and the ``denoiser → segmenter`` targets are loaded and the gates checked
   against the card's labels and the planned cells; the image + mask pairs of the split are read
   with the model card's preset and size, a seeded subset of ``n_samples``.
4. Every input is hashed (weights and card, each defense, the image and mask files; a phantom
   by its spec) into the run fingerprint; the resume state
   (:class:`SegmentationAuditState`, the kernel's :class:`~medrobust.run.state.RunState`) refuses
   changed inputs and keeps each finished cell under its key.
5. Each craft whose cells are not all finished attacks the images batch by batch (batch ``b``
   seeded ``derive_seed(craft.seed, f"batch{b}")``); each pending cell evaluates the
   adversarial images on its target, summarises them
   (:func:`~medrobust.metrics_segmentation.segmentation_summary`), saves its label maps and
   worst cases and is saved atomically.
6. Gates, verdict, ``results.json``, ``config.resolved.yaml``, ``environment.json`` and the
   reports are written.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust import __version__
from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.segmentation.config import SegmentationAuditConfig, dump_config
from medrobust.evaluation.segmentation.gate import (
    check_segmentation_gates,
    evaluate_segmentation_gates,
    parse_segmentation_gate,
)
from medrobust.evaluation.segmentation.planning import (
    Craft,
    all_cells,
    cell_keys,
    plan_segmentation_audit,
    safe_id,
)
from medrobust.evaluation.segmentation.results import CELL_FIELDS, SCHEMA, SegmentationCell
from medrobust.evaluation.segmentation.targets import (
    BARE,
    build_segmentation_targets,
    describe_segmentation_target,
    load_audited_segmenter,
)
from medrobust.run.seeds import derive_seed
from medrobust.run.state import FRESH_HINT, RunState
from medrobust.utils.labels import label_map
from medrobust.utils.lock import claim_run_folder
from medrobust.utils.logging import get_logger

log = get_logger("evaluation.segmentation")
STATE_SCHEMA = "medrobust.segmentation-audit-state/1"
#: Files and folders of a finished audit that ``fresh=True`` removes with the state.
OUTPUT_FILES = ("results.json", "report.md", "report.html", "config.resolved.yaml", "environment.json")
OUTPUT_DIRS = ("predictions", "examples", "plots")


class SegmentationAuditState(RunState):
    """The resume state of a segmentation audit: ``state/state.json`` and one file per finished cell."""

    schema = STATE_SCHEMA
    what = "segmentation audit"
    units = "cells"
    unit_fields = CELL_FIELDS
    key_field = "cell_fingerprint"

    @classmethod
    def config_mismatch(cls, run_dir: Path, changed: list[str]) -> str:
        """Changed run-level settings (attacks, budgets, threats and gates may change; these may not)."""
        shown = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
        return (
            f"{run_dir} holds a segmentation audit of a different config (changed: {shown}; attacks, budgets "
            f"and threats may change on resume, these may not); {FRESH_HINT}."
        )

    def describe_input_change(self, old: dict[str, Any], new: dict[str, Any]) -> str | None:
        """Which input file changed (weights, card, a defense, an image or mask), with its hashes."""
        from medrobust.evaluation.state import describe_input_change

        return describe_input_change(old, new)


# -- data -------------------------------------------------------------------------------------------
class AuditPairs:
    """The audited images ``(N, C, *spatial)`` and masks ``(N, *spatial)``, in memory."""

    def __init__(self, config: SegmentationAuditConfig, card: Any) -> None:
        from medrobust.attacks.base import plain_tensor
        from medrobust.data.segmentation import SegmentationDataset, open_segmentation_source
        from medrobust.data.segmentation.specs import segmentation_data_path
        from medrobust.evaluation.targets import select_indices

        spec = config.data
        self.path = segmentation_data_path(spec.source)
        source = open_segmentation_source(self.path, spec.kind, **spec.options)
        if list(source.label_names) != list(card.class_names):
            raise DataError(
                self.path,
                f"the data's labels {list(source.label_names)} differ from the model card's "
                f"{list(card.class_names)} (data.options.label_names sets them)",
            )
        preset = spec.preset or (source.dataset_info.get("medrobust") or {}).get("preset") or card.modality
        if not preset:
            raise ConfigError(
                "The 'data.preset' of the segmentation audit config is required: neither the model card nor "
                f"the data's dataset.json names a modality. Got data.source={spec.source!r}."
            )
        size = spec.size or (list(card.spatial_size) if card.spatial_size else None)
        dataset = SegmentationDataset(source, spec.split, preset, size)
        if len(dataset) == 0:
            raise DataError(self.path, f"no image + mask pairs in split {spec.split!r}")
        self.indices = select_indices(len(dataset), config.n_samples, config.seed)
        self.records = [dataset.records[i] for i in self.indices]
        items = [dataset[i] for i in self.indices]
        self.images = torch.stack([plain_tensor(it["image"]).float() for it in items])
        self.masks = torch.stack([plain_tensor(it["label"]).long()[0] for it in items])
        low, high = (float(b) for b in card.bounds)
        lo, hi = float(self.images.min()), float(self.images.max())
        if lo < low - 1e-6 or hi > high + 1e-6:
            raise DataError(
                self.path,
                f"preset {preset!r} produced values in [{lo:g}, {hi:g}] outside the model card's bounds "
                f"[{low:g}, {high:g}]",
            )
        if self.images.shape[1] != card.in_channels:
            raise DataError(
                self.path,
                f"images have {self.images.shape[1]} channel(s); the model card expects {card.in_channels}",
            )
        self.describe = {
            "source": spec.source,
            "path": str(self.path),
            "split": spec.split,
            "preset": preset,
            "spatial_size": list(self.images.shape[2:]),
            "n_available": len(dataset),
            "n": len(self.indices),
            "indices": list(self.indices),
            "ids": [r.id for r in self.records],
            "label_names": list(card.class_names),
            "lesion_labels": list(card.lesion_classes),
        }

    def __len__(self) -> int:
        return len(self.indices)

    def provenance(self, spec: Any, hasher: Any) -> dict[str, Any]:
        """Manifest of the image and mask files read (a phantom: its spec, as the classifier audit does)."""
        from medrobust.utils.hashing import manifest_sha256

        if spec.source.lower().startswith("phantom:"):
            return {
                "kind": "phantom",
                "path": str(self.path),
                "sha256": manifest_sha256([], {"phantom": spec.source}),
                "size": None,
                "n_files": 0,
                "phantom": spec.source,
                "files": [],
            }
        files = [f for r in self.records for f in (r.image, r.label)]
        base = self.path if self.path.is_dir() else self.path.parent
        try:
            entries = hasher.manifest(files, base)
        except OSError as exc:
            raise ConfigError(
                f"{exc.filename or base}: cannot read it to record its hash ({exc.strerror})."
            ) from None
        return {
            "kind": "files",
            "path": str(self.path),
            "sha256": manifest_sha256(entries),
            "size": int(sum(e["size"] for e in entries)),
            "n_files": len(entries),
            "phantom": None,
            "files": entries,
        }


# -- the run ----------------------------------------------------------------------------------------
def _wipe_outputs(out: Path) -> None:
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    for folder in OUTPUT_DIRS:
        if (out / folder).is_dir():
            shutil.rmtree(out / folder)


def run_segmentation_audit(
    config: SegmentationAuditConfig, out: str | Path, *, fresh: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) a segmentation audit into ``out``; write results.json and the reports.

    Args:
        config: A validated :class:`~.config.SegmentationAuditConfig`.
        out: Run folder (created; locked while the audit runs). A previous run of the same
            run-level settings and input files is resumed: finished cells whose key is unchanged
            are reused.
        fresh: Discard a previous run (state, results, reports, predictions) first.
        progress: Log one line per craft (attack, budget, model) as it starts.

    Returns:
        The results dict written to ``out/results.json`` (schema ``medrobust.segmentation-audit/1``).

    Raises:
        ConfigError: invalid gates or a gate matching no cell, a classifier's card, an unusable or
            locked ``out``, changed run settings or inputs without ``fresh``.
        DataError: unreadable pairs, labels that differ from the card's, images outside its bounds.
    """
    gates = [parse_segmentation_gate(g) for g in config.gates]
    out = Path(out)
    lock = claim_run_folder(out, "segmentation audit")
    try:
        if not fresh:
            SegmentationAuditState.precheck(out, config.run_inputs())
        return _run(config, gates, out, fresh, progress)
    finally:
        lock.release()


def _run(
    config: SegmentationAuditConfig, gates: list[Any], out: Path, fresh: bool, progress: bool
) -> dict[str, Any]:
    from medrobust.evaluation.state import defense_provenance, file_entry, run_fingerprint
    from medrobust.metrics_segmentation import segmentation_summary
    from medrobust.models.segmentation.checkpoint import segmenter_files
    from medrobust.utils.device import resolve_device
    from medrobust.utils.hashing import FileHasher

    device = resolve_device(config.device)
    segmenter = load_audited_segmenter(config.model, device)
    card = segmenter.card
    bounds = (float(card.bounds[0]), float(card.bounds[1]))
    crafts = plan_segmentation_audit(config, bounds)
    check_segmentation_gates(gates, all_cells(crafts), card.class_names)  # before any attack
    targets = build_segmentation_targets(config, segmenter, device)
    pairs = AuditPairs(config, card)

    hasher = FileHasher()
    provenance = {
        "model": dict(
            zip(
                ("weights", "card"),
                (
                    file_entry(hasher, f)
                    for f in segmenter_files(config.model.path, config.model.card, config.model.format)
                ),
                strict=True,
            )
        ),
        "defenses": {d.name: defense_provenance(d, hasher) for d in config.defenses},
        "data": pairs.provenance(config.data, hasher),
    }
    run_inputs = config.run_inputs()
    fingerprint = run_fingerprint(run_inputs, provenance)
    state = SegmentationAuditState(
        out, fingerprint, run_inputs, provenance, {"config": config.resolved()}, fresh=fresh
    )
    if fresh:
        _wipe_outputs(out)
    cell_keys(crafts, config, fingerprint)
    state.expect({c.id: c.key for c in all_cells(crafts)})

    names = list(card.class_names)
    lesions = list(card.lesion_classes)
    threshold = config.detection_threshold
    truth = pairs.masks
    clean_pred = {
        name: _predict(model, pairs.images, config.batch_size, device) for name, model in targets.items()
    }
    clean = {
        name: segmentation_summary(truth, pred, names, lesions, threshold=threshold, seed=config.seed)
        for name, pred in clean_pred.items()
    }
    pred_dir = out / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    _save_maps(pred_dir / "truth.npz", truth, pairs.indices)
    for name, pred in clean_pred.items():
        _save_maps(pred_dir / f"clean-{safe_id(name)}.npz", pred, pairs.indices)

    runner = _CraftRunner(config, targets, pairs, clean_pred, clean, state, device, out)
    for craft in crafts:
        if all(state.has(c.id) for c in craft.cells):
            continue
        if progress:
            log.info(
                "segmentation audit: %s on %s (%d image(s))",
                craft.key.split("|")[0],
                craft.craft_on,
                len(pairs),
            )
        runner.run(craft)

    cells = [SegmentationCell.from_dict(state.load(c.id)) for c in all_cells(crafts)]
    outcomes = [g.to_dict() for g in evaluate_segmentation_gates(gates, cells)]
    failed = sum(not g["passed"] for g in outcomes)
    verdict = {
        "status": "no-gates" if not outcomes else ("fail" if failed else "pass"),
        "gates": {"total": len(outcomes), "passed": len(outcomes) - failed, "failed": failed},
    }
    results = {
        "schema": SCHEMA,
        "medrobust_version": __version__,
        "name": config.name,
        "task": "segmentation",
        "fingerprint": config.fingerprint(),
        "provenance": {"run_fingerprint": fingerprint, **provenance},
        "seed": config.seed,
        "config": config.resolved(),
        "data": pairs.describe,
        "model": {"path": str(config.model.path), "card": card.model_dump(mode="json")},
        "bounds": list(bounds),
        "detection_threshold": threshold,
        "targets": [
            {
                **describe_segmentation_target(name, model, _spec(config, name)),
                "clean": {k: v for k, v in clean[name].items() if k != "per_image"},
                "clean_per_image": clean[name]["per_image"],
                "predictions": f"predictions/clean-{safe_id(name)}.npz",
            }
            for name, model in targets.items()
        ],
        "threats": ["whitebox", *config.threats] if config.defenses else ["whitebox"],
        "attacks": [{"label": a.label, **a.identity(), "goal": a.goal} for a in config.attacks],
        "cells": [c.to_dict() for c in cells],
        "gates": outcomes,
        "verdict": verdict,
        "notes": list(config.notes),
    }
    from medrobust.evaluation.segmentation.report import write_segmentation_reports
    from medrobust.run.environment import environment
    from medrobust.utils.io import atomic_write_json, atomic_write_text

    atomic_write_text(out / "config.resolved.yaml", dump_config(config))
    atomic_write_json(out / "environment.json", environment(device, config.seed))
    atomic_write_json(out / "results.json", results)
    write_segmentation_reports(results, out)
    return results


def _spec(config: SegmentationAuditConfig, name: str) -> Any:
    return next((d for d in config.defenses if d.name == name), None)


@torch.no_grad()
def _predict(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Label maps ``(N, *spatial)`` of ``model`` on ``images`` (batch-wise, on CPU)."""
    out = [
        label_map(model(images[i : i + batch_size].to(device))).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros((0, *images.shape[2:]), dtype=torch.long)


def _save_maps(path: Path, maps: torch.Tensor, indices: list[int]) -> None:
    from medrobust.utils.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, labels=maps.numpy().astype(np.uint8), indices=np.asarray(indices, dtype=np.int64)
        )


class _CraftRunner:
    """Attacks one craft over the images and saves its pending cells."""

    def __init__(
        self,
        config: SegmentationAuditConfig,
        targets: dict[str, nn.Module],
        pairs: AuditPairs,
        clean_pred: dict[str, torch.Tensor],
        clean: dict[str, dict[str, Any]],
        state: SegmentationAuditState,
        device: torch.device,
        out: Path,
    ) -> None:
        self.config = config
        self.targets = targets
        self.pairs = pairs
        self.clean_pred = clean_pred
        self.clean = clean
        self.state = state
        self.device = device
        self.out = out

    def attack(self, craft: Craft) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, float]:
        """Adversarial images, their label maps on the crafting model, L∞ norms, queries and seconds."""
        from medrobust.attacks.segmentation import create_segmentation_attack

        atk_cfg = self.config.attack(craft.attack)
        model = self.targets[craft.craft_on]
        images, masks, bs = self.pairs.images, self.pairs.masks, self.config.batch_size
        advs, preds, norms, queries = [], [], [], 0
        t0 = time.perf_counter()
        for b, start in enumerate(range(0, len(images), bs)):
            attack = create_segmentation_attack(
                atk_cfg.name,
                model,
                eps=craft.budget,
                seed=derive_seed(craft.seed, f"batch{b}"),
                **atk_cfg.params,
            )
            res = attack(
                images[start : start + bs].to(self.device), masks[start : start + bs].to(self.device)
            )
            advs.append(res.adv.cpu())
            preds.append(res.adv_pred.cpu())
            norms.append(res.linf.cpu())
            queries = int(res.queries.max()) if len(res.queries) else queries
        seconds = time.perf_counter() - t0
        return torch.cat(advs), torch.cat(preds), torch.cat(norms), queries, seconds

    def run(self, craft: Craft) -> None:
        """Attack, then evaluate and save every pending cell of ``craft``."""
        from medrobust.metrics_segmentation import segmentation_summary

        config, state = self.config, self.state
        atk_cfg = config.attack(craft.attack)
        adv, craft_pred, linf, queries, seconds = self.attack(craft)
        names = list(self.targets[BARE].card.class_names)  # type: ignore[union-attr]
        lesions = list(self.targets[BARE].card.lesion_classes)  # type: ignore[union-attr]
        pending = [c for c in craft.cells if not state.has(c.id)]
        for cell in pending:
            t0 = time.perf_counter()
            if cell.target == craft.craft_on:
                pred = craft_pred
            else:
                pred = _predict(self.targets[cell.target], adv, config.batch_size, self.device)
            summary = segmentation_summary(
                self.pairs.masks,
                pred,
                names,
                lesions,
                clean_pred=self.clean_pred[cell.target],
                threshold=config.detection_threshold,
                seed=config.seed,
            )
            pred_file = f"predictions/{cell.id}.npz"
            _save_maps(self.out / pred_file, pred, self.pairs.indices)
            examples = None
            if config.save_examples:
                examples = f"examples/{cell.id}.npz"
                self._save_examples(self.out / examples, adv, pred, cell.target, summary)
            bpda = cell.threat == "adaptive" and bool(getattr(self.targets[cell.target], "uses_bpda", False))
            record = SegmentationCell(
                id=cell.id,
                key=craft.key,
                target=cell.target,
                threat=cell.threat,
                attack=cell.attack,
                attack_name=atk_cfg.name,
                goal=atk_cfg.goal,
                norm=cell.norm,
                eps=cell.eps,
                eps_label=cell.eps_label,
                metrics={k: v for k, v in summary.items() if k != "per_image"},
                clean={k: v for k, v in self.clean[cell.target].items() if k != "per_image"},
                per_image=summary["per_image"],
                seconds=seconds / len(craft.cells) + time.perf_counter() - t0,
                median_linf=float(linf.median()) if len(linf) else None,
                queries=queries,
                uses_bpda=bpda,
                examples=examples,
                predictions=pred_file,
                cell_fingerprint=cell.key,
            )
            state.save(cell.id, record.to_dict(), log_key=cell.ident)

    def _save_examples(
        self, path: Path, adv: torch.Tensor, pred: torch.Tensor, target: str, summary: dict[str, Any]
    ) -> None:
        """The worst images of a cell (lowest mean foreground Dice under attack) for the overlays."""
        from medrobust.utils.io import atomic_path

        dice = np.asarray(
            [[np.nan if v is None else v for v in row[1:]] for row in summary["per_image"]["dice"]],
            dtype=float,
        )
        finite = np.isfinite(dice)
        count = finite.sum(1)
        # mean over the labels with a Dice (images without any rank last)
        score = np.where(count > 0, np.where(finite, dice, 0.0).sum(1) / np.maximum(count, 1), np.inf)
        order = np.argsort(score, kind="stable")[: self.config.save_examples]
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                positions=order.astype(np.int64),
                indices=np.asarray(self.pairs.indices, dtype=np.int64)[order],
                image=self.pairs.images[order].numpy(),
                adv=adv[order].numpy(),
                truth=self.pairs.masks[order].numpy().astype(np.uint8),
                clean_pred=self.clean_pred[target][order].numpy().astype(np.uint8),
                adv_pred=pred[order].numpy().astype(np.uint8),
                dice=np.where(np.isfinite(score[order]), score[order], np.nan),
            )

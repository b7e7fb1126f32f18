"""The audit runner: config → data + model (+ defenses) → crafts → cells → results.json → report.

Flow of :func:`run_audit` (each step one call a reader can follow):

1. :func:`~medrobust.evaluation.cells.plan_audit` lists crafts and cells (pure config).
2. :class:`~medrobust.evaluation.state.AuditState` opens the resume state (refuses a changed config).
3. Data, classifier and defended targets are loaded; clean predictions are computed once
   per target; model sanity checks run on one batch per target.
4. Each craft attacks, in fixed batches of global sample positions, only the samples
   that some evaluated target classifies correctly (the others cannot become robust);
   every batch has its own seed derived from the craft's seed. The craft's cells are
   then evaluated and each is saved as it completes.
5. Results checks (flags), gates, ``results.json`` and the reports are written.

Per-sample results are first-class: every cell keeps, per sample position, the label,
clean and effective adversarial predictions, success, norms and queries.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust import __version__
from medrobust.evaluation.cells import AuditPlan, Craft, derive_seed, plan_audit, safe_id
from medrobust.evaluation.config import BARE, AttackConfig, AuditConfig, dump_config
from medrobust.evaluation.flags import run_model_checks, run_results_checks
from medrobust.evaluation.gate import check_gates_match, evaluate_gates, parse_gate
from medrobust.evaluation.metrics import (
    cell_metrics,
    effective_predictions,
    prediction_metrics,
    within_budget,
)
from medrobust.evaluation.state import AuditState
from medrobust.evaluation.targets import (
    AuditData,
    build_targets,
    describe_target,
    load_audit_data,
    load_classifier,
)
from medrobust.utils.io import atomic_path
from medrobust.utils.logging import get_logger

SCHEMA = "medrobust.audit/1"
log = get_logger("evaluation")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else (str(value) if math.isinf(value) else value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _jsonable(value.item())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return str(value)


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes ``(N,)`` and softmax probabilities ``(N, K)`` (float64) in fixed batches."""
    from medrobust.attacks.base import eval_mode
    from medrobust.metrics import softmax

    logits = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            logits.append(model(images[start : start + batch_size].to(device)).float().cpu())
    lg = torch.cat(logits).numpy() if logits else np.zeros((0, 2), dtype=np.float32)
    probs = softmax(lg)
    return lg.argmax(axis=1).astype(np.int64), probs


class _CraftOutput:
    def __init__(self, images: torch.Tensor) -> None:
        n = len(images)
        self.adv = images.clone()
        self.linf = np.zeros(n, dtype=np.float64)
        self.l2 = np.zeros(n, dtype=np.float64)
        self.queries = np.zeros(n, dtype=np.int64)
        self.attacked = np.zeros(n, dtype=bool)
        self.params: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.seconds = 0.0


def run_craft(
    craft: Craft,
    attack: AttackConfig,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    subset: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> _CraftOutput:
    """Attack the ``subset`` samples of ``images`` on ``model`` in fixed global batches.

    Batch ``b`` covers positions ``[b*batch_size, (b+1)*batch_size)``; its attack seed is
    ``derive_seed(craft.seed, "batch{b}")``, so results do not depend on which other
    batches run in the same process (resume, sharding).
    """
    from medrobust.attacks import create_attack

    out = _CraftOutput(images)
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, len(images), batch_size)):
        pos = np.arange(start, min(start + batch_size, len(images)))
        sel = pos[subset[pos]]
        if not len(sel):
            continue
        kwargs = dict(attack.params)
        if craft.eps is not None:
            kwargs["eps"] = craft.eps
        atk = create_attack(attack.name, model, seed=derive_seed(craft.seed, f"batch{b}"), **kwargs)
        idx = torch.as_tensor(sel)
        res = atk(images[idx].to(device), labels[idx].to(device))
        out.adv[idx] = res.adv.detach().to(out.adv.dtype).cpu()
        out.linf[sel] = res.linf.detach().double().cpu().numpy()
        out.l2[sel] = res.l2.detach().double().cpu().numpy()
        out.queries[sel] = res.queries.detach().long().cpu().numpy()
        out.attacked[sel] = True
        if not out.params:
            out.params = {k: v for k, v in atk.params().items() if k != "seed"}
        for key, value in (res.info or {}).items():
            out.info.setdefault(str(key), _jsonable(value))
    out.seconds = time.perf_counter() - t0
    return out


def _save_examples(
    path: Path, k: int, data: AuditData, craft_out: _CraftOutput, target: nn.Module, device: torch.device
) -> None:
    k = min(k, len(data.labels))
    arrays = {
        "positions": np.arange(k, dtype=np.int64),
        "clean": data.images[:k].numpy().astype(np.float32),
        "adv": craft_out.adv[:k].numpy().astype(np.float32),
        "attacked": craft_out.attacked[:k],
    }
    den = getattr(target, "denoiser", None)
    if den is not None and k:
        from medrobust.attacks.base import eval_mode

        with torch.no_grad(), eval_mode(den):
            arrays["denoised_adv"] = den(craft_out.adv[:k].to(device)).float().cpu().numpy()
            arrays["denoised_clean"] = den(data.images[:k].to(device)).float().cpu().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _environment(config: AuditConfig, device: torch.device) -> dict[str, Any]:
    import datetime
    import platform
    import sys

    env: dict[str, Any] = {
        "medrobust": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "device": str(device),
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "seed": config.seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for mod in ("monai", "numpy", "torchvision"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    return env


def run_audit(
    config: AuditConfig, out: str | Path, *, fresh: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) an audit into ``out`` and write results.json and the reports.

    Args:
        config: A validated :class:`AuditConfig`.
        out: Run folder (created). An existing run of the same config is resumed.
        fresh: Discard an existing run state instead of resuming (needed after a config change).
        progress: Show a tqdm bar over cells.

    Returns:
        The results dict written to ``out/results.json`` (schema ``medrobust.audit/1``).

    Raises:
        ConfigError: invalid gates, a gate matching no cell, or a changed config without ``fresh``.
    """
    from tqdm.auto import tqdm

    from medrobust.reporting import write_reports
    from medrobust.utils.device import resolve_device
    from medrobust.utils.io import atomic_write_json, atomic_write_text

    out = Path(out)
    plan: AuditPlan = plan_audit(config)
    gates = [parse_gate(g) for g in config.gates]
    check_gates_match(gates, [c.as_dict() for c in plan.cells])
    resolved = config.resolved()
    state = AuditState(out, config.fingerprint(), resolved, fresh=fresh)
    examples_dir = out / "examples"
    examples_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        for stale in examples_dir.glob("*.npz"):
            stale.unlink()

    device = resolve_device(config.device)
    classifier = load_classifier(config, device)
    card = classifier.card
    data = load_audit_data(config, card)
    targets = build_targets(config, classifier, device)
    specs = {d.name: d for d in config.defenses}
    positive = card.positive_index
    num_classes = card.num_classes
    labels_np = data.labels.numpy()

    clean: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    target_info = []
    flags = []
    n_check = min(8, len(data.labels))
    for name, model in targets.items():
        clean[name] = predict(model, data.images, config.batch_size, device)
        info = describe_target(name, model, specs.get(name))
        pred, probs = clean[name]
        info["clean"] = {
            **prediction_metrics(labels_np, pred, probs, num_classes, positive),
            "pred": pred.tolist(),
            "probs": probs.tolist(),
        }
        target_info.append(info)
        flags += run_model_checks(
            name, model, data.images[:n_check].to(device), data.labels[:n_check].to(device)
        )

    attacks = {a.label: a for a in config.attacks}
    bar = tqdm(total=len(plan.cells), desc="audit cells", unit="cell", disable=not progress, leave=False)
    for craft in plan.crafts:
        pending = [c for c in craft.cells if not state.has(c.id)]
        bar.update(len(craft.cells) - len(pending))
        if not pending:
            continue
        atk_cfg = attacks[craft.attack]
        eval_targets = list(dict.fromkeys(c.target for c in pending))
        # Samples misclassified by every target this craft is evaluated on cannot become robust.
        subset = np.zeros(len(labels_np), dtype=bool)
        for t in craft.eval_targets:
            subset |= clean[t][0] == labels_np
        bar.set_postfix_str(craft.key)
        craft_out = run_craft(
            craft,
            atk_cfg,
            targets[craft.craft_on],
            data.images,
            data.labels,
            subset,
            config.batch_size,
            device,
        )
        gradient_free = bool(getattr(atk_cfg.attack_class, "gradient_free", False))
        bpda = craft.craft_on != BARE and bool(getattr(targets[craft.craft_on], "uses_bpda", False))
        for tname in eval_targets:
            t0 = time.perf_counter()
            cpred, cprobs = clean[tname]
            raw_pred, raw_probs = cpred.copy(), cprobs.copy()
            idx = np.flatnonzero(craft_out.attacked)
            if len(idx):
                p, pr = predict(
                    targets[tname], craft_out.adv[torch.as_tensor(idx)], config.batch_size, device
                )
                raw_pred[idx], raw_probs[idx] = p, pr
            ex_name = f"{safe_id(craft.key + '|' + tname)}.npz"
            if config.save_examples:
                _save_examples(
                    examples_dir / ex_name, config.save_examples, data, craft_out, targets[tname], device
                )
            eval_seconds = time.perf_counter() - t0
            for cell in (c for c in pending if c.target == tname):
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
                record = {
                    "id": cell.id,
                    "key": cell.key,
                    "target": cell.target,
                    "threat": cell.threat,
                    "attack": cell.attack,
                    "attack_name": cell.attack_name,
                    "norm": cell.norm,
                    "eps": None if math.isinf(cell.eps) else cell.eps,
                    "eps_label": cell.eps_label,
                    "minimal": cell.minimal,
                    "gradient_free": gradient_free,
                    "craft": craft.key,
                    "craft_on": craft.craft_on,
                    "seed": craft.seed,
                    "bpda": bpda,
                    "params": _jsonable(craft_out.params),
                    "info": craft_out.info,
                    "metrics": metrics,
                    "n_over_budget": over if not cell.minimal else 0,
                    "seconds": craft_out.seconds + eval_seconds,
                    "craft_seconds": craft_out.seconds,
                    "eval_seconds": eval_seconds,
                    "examples": f"examples/{ex_name}" if config.save_examples else None,
                    "samples": {
                        "position": list(range(len(labels_np))),
                        "index": list(data.indices),
                        "label": labels_np.tolist(),
                        "clean_pred": cpred.tolist(),
                        "adv_pred": adv_pred.tolist(),
                        "adv_raw_pred": raw_pred.tolist(),
                        "success": fooled.tolist(),
                        "used_adv": used.tolist(),
                        "attacked": craft_out.attacked.tolist(),
                        "linf": craft_out.linf.tolist(),
                        "l2": craft_out.l2.tolist(),
                        "queries": craft_out.queries.tolist(),
                        "adv_probs": adv_probs.tolist(),
                    },
                }
                state.save(cell.id, record)
                bar.update(1)
    bar.close()

    cells = [state.load(c.id) for c in plan.cells]
    flags += run_results_checks(cells, target_info)
    gate_results = evaluate_gates(gates, cells)
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "medrobust_version": __version__,
        "name": config.name,
        "fingerprint": config.fingerprint(),
        "seed": config.seed,
        "config": resolved,
        "data": {
            **data.describe,
            "n": len(labels_np),
            "class_names": list(card.class_names),
            "positive_class": card.positive_class,
            "indices": list(data.indices),
            "ids": list(data.ids),
            "labels": labels_np.tolist(),
        },
        "model": {"path": str(config.model.path), "card": card.model_dump(mode="json")},
        "bounds": [float(b) for b in card.bounds],
        "targets": target_info,
        "threats": ["whitebox", *config.threats] if config.defenses else ["whitebox"],
        "attacks": [
            {
                "label": a.label,
                "name": a.name,
                "norm": a.norm,
                "minimal": a.minimal,
                "params": _jsonable(a.params),
            }
            for a in config.attacks
        ],
        "budgets": {"linf": config.budgets.linf, "l2": config.budgets.l2},
        "cells": cells,
        "flags": [f.to_dict() for f in flags],
        "gates": [g.to_dict() for g in gate_results],
        "notes": list(config.notes),
    }
    atomic_write_text(out / "config.resolved.yaml", dump_config(config))
    atomic_write_json(out / "environment.json", _environment(config, device))
    write_reports(results, out)
    return results

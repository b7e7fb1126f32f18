"""Robustness audits: config, planning, crafting, running, results schema, flags, gates, resume.

>>> from medrobust.evaluation import load_config, run_audit
>>> cfg = load_config("pipelines/chest_xray.yaml")       # doctest: +SKIP
>>> results = run_audit(cfg, "runs/audit-cxr")            # doctest: +SKIP

Submodules are imported on first use so ``import medrobust.evaluation`` stays light.
"""

from __future__ import annotations

from medrobust.utils.lazy import lazy_attributes

_LAZY = {
    "AuditConfig": "medrobust.evaluation.config",
    "config_from_dict": "medrobust.evaluation.config",
    "load_config": "medrobust.evaluation.config",
    "plan_audit": "medrobust.evaluation.planning",
    "derive_seed": "medrobust.run.seeds",
    "AuditDocument": "medrobust.evaluation.results",
    "parse_gate": "medrobust.evaluation.gate",
    "evaluate_gates": "medrobust.evaluation.gate",
    "run_audit": "medrobust.evaluation.runner",
    "audit": "medrobust.evaluation.api",
    "load_results": "medrobust.evaluation.api",
    "AuditResults": "medrobust.evaluation.api",
    "FLAG_CHECKS": "medrobust.evaluation.flags",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

"""Progress in cost-weighted model evaluations: costs, labels, reused work left out of the total."""

from __future__ import annotations

import io

from medrobust.evaluation.config import AttackConfig
from medrobust.evaluation.planning import Craft
from medrobust.evaluation.progress import AuditProgress, attack_cost, craft_label


def _cost(name, **params):
    cfg = AttackConfig(name=name, params=params)
    return attack_cost(cfg.name, cfg.full_params(), num_classes=2)


def test_costs_follow_steps_and_queries():
    assert _cost("fgsm") < _cost("pgd", steps=10) < _cost("pgd", steps=40)
    assert _cost("pgd", steps=10, restarts=2) == 2 * _cost("pgd", steps=10)
    assert _cost("spsa", steps=20, samples=8) == 2 * 20 * 8
    assert _cost("square", queries=1000) == 1000
    assert _cost("autoattack", version="standard") > 10 * _cost("autoattack", version="fast")
    assert _cost("cw", steps=20, binary_steps=2) == _cost("pgd", steps=40)


def test_labels_name_attack_budget_and_threat():
    bare = Craft("bare|pgd|8/255", "bare", "pgd", 8 / 255, 0)
    assert craft_label(bare, ["graybox", "adaptive"]) == "pgd@8/255 · whitebox + graybox (crafted on bare)"
    assert craft_label(bare, []) == "pgd@8/255 · whitebox (crafted on bare)"
    adaptive = Craft("dae|cw|min", "dae", "cw", None, 0)
    assert craft_label(adaptive, ["adaptive"]) == "cw · adaptive on dae"


def test_reused_work_leaves_the_total_and_is_never_counted_as_done():
    bar = AuditProgress(total=1000, n_cells=10, cells_done=4, enabled=True)
    bar.bar.fp = io.StringIO()
    bar.reused(600)  # a resumed run finds 600 evaluations' worth of finished batches
    assert bar.bar.total == 400 and bar.bar.n == 0
    bar.advance(100)
    bar.cells_finished(2)
    assert bar.bar.n == 100 and bar.cells_done == 6
    assert "cells 6/10" in str(bar.bar)
    bar.close()

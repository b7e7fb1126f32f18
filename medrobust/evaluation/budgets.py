"""The audit's budgets: labels as written, and how a budget reads in the card's units.

A budget is kept as the config writes it (``"2/255"``, ``0.5``) and converted once, with the
model card's bounds, by :func:`medrobust.validation.budget_to_image_units` when the audit is
planned (:func:`medrobust.evaluation.planning.resolve_budgets`). Its *label* (cell keys,
gates, table columns) depends on the config only, so ``pgd@2/255`` names the same cell on a
[0, 1] card (ε = 0.0078) and on a CT card with bounds [-1024, 3071] (ε = 32.1 HU).

A leaf module: configs, gates, planning and reports all import it.

>>> eps_label(2 / 255), eps_label(0.5), budget_label("8/255")
('2/255', '0.5', '8/255')
>>> describe_budget(32.12, "linf", (-1024.0, 3071.0), "HU")
'32.12 HU per pixel = 2 of 255 grey levels of the range [-1024, 3071] HU'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from medrobust.validation import parse_number

#: Label of a minimal attack's unbounded cell.
UNBOUNDED = "inf"


def eps_label(value: float) -> str:
    """Human label of a number: ``0.5``, ``2/255`` (long decimals that are multiples of 1/255), ``inf``."""
    if math.isinf(value):
        return UNBOUNDED
    short = f"{value:g}"
    k = value * 255.0
    if len(short) > 5 and value > 0 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return short


def budget_label(budget: str | float) -> str:
    """Label of a budget as written: ``"2/255"`` stays ``2/255`` whatever the card's bounds.

    Numbers are labelled by :func:`eps_label` (so ``0.00784313725490196`` reads ``2/255``, as
    on a [0, 1] card it always did).
    """
    if isinstance(budget, float) and math.isinf(budget):
        return UNBOUNDED
    return eps_label(parse_number(budget, "budget"))


def same_budget(label: str | None, eps: Any, value: float) -> bool:
    """Whether a gate's budget ``value`` (as written, parsed) names a cell (its ``label`` and ``eps``).

    Gates name budgets as the config writes them, so they are compared with the cell's label
    (``2/255`` matches ``2/255`` on every card); a cell without a label is compared by ``eps``.
    ``inf`` matches only the unbounded cells (``eps`` None or inf).
    """
    # a planned cell's eps is None until the card is read: its label says whether it is unbounded
    unbounded = label == UNBOUNDED if label is not None else eps is None or math.isinf(float(eps))
    if math.isinf(value) or unbounded:
        return math.isinf(value) and unbounded
    if label is not None:
        if label == eps_label(value):
            return True
        written = parse_number(label, "eps_label")
    else:
        written = float(eps)
    return math.isclose(written, value, rel_tol=1e-6, abs_tol=1e-12)


def intensity_unit(bounds: Sequence[float], modality: str | None = None) -> str:
    """``"HU"`` for a CT card (modality ``ct…`` or bounds reaching air at -1000 HU), else ``""``."""
    low = float(bounds[0])
    return "HU" if str(modality or "").lower().startswith("ct") or low <= -1000.0 else ""


def describe_budget(eps: float, norm: str, bounds: Sequence[float], unit: str = "") -> str:
    """A budget both ways: image units and 8-bit grey levels (k/255) of the card's intensity range.

    On a [0, 1] card the two coincide and the text is ``"2 of 255 grey levels per pixel
    (range [0, 1])"``; otherwise the image units lead (``"32.12 HU per pixel = 2 of 255 grey
    levels of the range [-1024, 3071] HU"``). An L2 budget is spread over the image, so it is
    given per image.
    """
    low, high = float(bounds[0]), float(bounds[1])
    levels = eps / (high - low) * 255.0
    if (low, high) == (0.0, 1.0) and not unit:
        if norm == "linf":
            return f"{levels:.3g} of 255 grey levels per pixel (range [{low:g}, {high:g}])"
        return f"L2 norm {levels:.3g} in 8-bit grey levels over the whole image (range [{low:g}, {high:g}])"
    amount = f"{eps:.4g} {unit or 'image units'}"
    span = f"the range [{low:g}, {high:g}]" + (f" {unit}" if unit else "")
    if norm == "linf":
        return f"{amount} per pixel = {levels:.3g} of 255 grey levels of {span}"
    return f"L2 norm {amount} = {levels:.3g} in 8-bit grey levels over the whole image ({span})"

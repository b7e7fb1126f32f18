"""Early parameter validation with scikit-learn style messages."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from medrobust.errors import ConfigError


def parse_number(value: Any, name: str = "value", owner: str | None = None) -> float:
    """Parse a float, int, or a fraction string such as ``"2/255"``.

    Raises:
        ConfigError: naming the parameter when the value is not a finite number.
    """
    where = f"The {name!r} parameter" + (f" of {owner}" if owner else "")
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number (e.g. 0.03 or '8/255'). Got {value!r}.")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            out = float(Fraction(text)) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{where} must be a number (e.g. 0.03 or '8/255'). Got {value!r}.") from None
    else:
        raise ConfigError(f"{where} must be a number (e.g. 0.03 or '8/255'). Got {value!r}.")
    if not math.isfinite(out):
        raise ConfigError(f"{where} must be finite. Got {value!r}.")
    return out


def check_float(
    value: Any,
    name: str,
    owner: str | None = None,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = False,
    high_inclusive: bool = True,
) -> float:
    """Validate a real number in an interval and return it as ``float``.

    Example message: "The 'eps' parameter of PGD must be a float in (0, 1]. Got -0.1."
    """
    out = parse_number(value, name, owner)
    lo_ok = low is None or (out >= low if low_inclusive else out > low)
    hi_ok = high is None or (out <= high if high_inclusive else out < high)
    if not (lo_ok and hi_ok):
        lb = "[" if low_inclusive else "("
        rb = "]" if high_inclusive else ")"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        where = f"The {name!r} parameter" + (f" of {owner}" if owner else "")
        raise ConfigError(f"{where} must be a float in {lb}{lo}, {hi}{rb}. Got {value!r}.")
    return out


def check_int(
    value: Any, name: str, owner: str | None = None, low: int | None = None, high: int | None = None
) -> int:
    """Validate an integer in ``[low, high]`` and return it."""
    where = f"The {name!r} parameter" + (f" of {owner}" if owner else "")
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{where} must be an int. Got {value!r}.")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        raise ConfigError(f"{where} must be an int in [{lo}, {hi}]. Got {value!r}.")
    return value


def check_choice(value: Any, name: str, choices: Sequence[str], owner: str | None = None) -> str:
    """Validate that ``value`` is one of ``choices`` (with a "did you mean" hint)."""
    from medrobust.registry import did_you_mean

    where = f"The {name!r} parameter" + (f" of {owner}" if owner else "")
    if value not in choices:
        hint = did_you_mean(str(value), list(choices))
        raise ConfigError(f"{where} must be one of {sorted(choices)}. Got {value!r}.{hint}")
    return value


def check_bounds(bounds: Any, name: str = "bounds", owner: str | None = None) -> tuple[float, float]:
    """Validate an intensity interval ``(low, high)`` with ``low < high``."""
    where = f"The {name!r} parameter" + (f" of {owner}" if owner else "")
    try:
        low, high = (parse_number(b, name, owner) for b in bounds)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a pair (low, high). Got {bounds!r}.") from None
    if not low < high:
        raise ConfigError(f"{where} must satisfy low < high. Got {bounds!r}.")
    return (low, high)


def is_range_fraction(value: Any) -> bool:
    """True for a budget written as a fraction such as ``"2/255"`` (k/255 of the bounds' range)."""
    return isinstance(value, str) and "/" in value


class ImageUnits(float):
    """A budget already converted to image units (the audit's budgets after conversion).

    :func:`budget_to_image_units` returns it unchanged: it never had the old fraction-of-range
    meaning, so a small value (a few HU on a CT card) is not refused as one.
    """


def budget_to_image_units(
    value: Any,
    bounds: tuple[float, float],
    name: str = "eps",
    owner: str | None = None,
    *,
    legacy_check: bool = True,
) -> float:
    """The one unit of ε: image units within the card's bounds, converted here and only here.

    ``"k/255"`` (any text with a slash) means k/255 of the bounds' range: ``"2/255"`` is
    2/255 on a [0, 1] card and 2/255 × 4095 ≈ 32.1 HU on a CT card with bounds
    [-1024, 3071]. A number (or numeric text) is already in image units. The same rule holds
    for the audit's budgets, attack parameters in Python and YAML, denoiser attacks and
    adversarial training.

    ``legacy_check=False`` accepts any plain number: for budgets that never had the old
    fraction-of-range meaning (the audit's ``budgets:`` were always image units). An
    :class:`ImageUnits` value is returned as it is.

    Raises:
        ConfigError: naming the parameter when the value is not a finite number.
    """
    if isinstance(value, ImageUnits):
        return float(value)
    number = parse_number(value, name, owner)
    low, high = (float(b) for b in bounds)
    width = high - low
    if is_range_fraction(value):
        return number * width
    if legacy_check and width > 2.0 and 0.0 < number < width / 1000.0:
        # Before the one unit of ε, denoiser attacks and adversarial training read a plain
        # number as a fraction of the range; such a config now asks for under 0.1 % of the
        # range in image units, which no real budget is. Refuse and say how to convert.
        where = f"The {name!r} parameter" + (f" of {owner}" if owner else "")
        raise ConfigError(
            f"{where} is {number:g} in image units of the bounds [{low:g}, {high:g}], under 0.1 % of "
            f"the range: budgets are image units (medrobust < 0.2 read a plain number here as a fraction "
            f"of the range). Write '{number * 255:.4g}/255' for {number:g} of the range "
            f"(= {number * width:.4g} image units), or the budget in image units."
        )
    return number

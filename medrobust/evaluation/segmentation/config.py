"""The segmentation audit's configuration: a validated YAML file with ``task: segmentation``.

Nothing in a config is executed: attack names resolve only through
:data:`~medrobust.attacks.segmentation.SEGMENTATION_ATTACKS`, denoisers through their registry,
budgets follow the one unit of ε (``"2/255"`` = 2/255 of the model card's range, converted by
:func:`medrobust.validation.budget_to_image_units`), and every error names the field. The
model, defense and budget sections are the classifier audit's own models
(:mod:`medrobust.evaluation.config`), so they read and validate the same way.

Example (``pipelines/segmentation_chest_xray.yaml``)::

    task: segmentation
    data: {source: "phantom:chest_xray?n=140", split: test}
    model: {path: runs/seg-chest}
    defenses: [{name: median, denoiser: median, params: {kernel_size: 3}}]
    attacks:
      - {name: pgd, params: {steps: 10}}
      - {name: segpgd, params: {steps: 10}}
      - {name: pgd, label: erase, params: {steps: 10, goal: erase-lesion}}
    budgets: {linf: [2/255, 8/255]}
    threats: [graybox, adaptive]
    gates: ["pgd@2/255:target=bare:dice>=0.5"]
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from medrobust.errors import ConfigError
from medrobust.evaluation.config import (
    _NAME_RE,
    RESERVED_ATTACK_PARAMS,
    THREATS,
    Budgets,
    DefenseConfig,
    ModelConfig,
    check_attack_params,
    check_preset_name,
    square_size,
)
from medrobust.metrics_segmentation import DETECTION_THRESHOLD
from medrobust.run.config import ConfigModel, read_config, validate_config

#: The value of ``task`` that selects this audit.
TASK = "segmentation"


class SegmentationDataConfig(ConfigModel):
    """Where the image + mask pairs come from."""

    source: str = Field(
        description="A Decathlon folder, images/ + masks/ folder or CSV manifest, or "
        "phantom:MODALITY[@SIZE][?n=N&seed=S] (written once into the phantom cache)."
    )
    kind: str | None = Field(
        None, description="Source layout (decathlon, csv, mask-folder) when not detected."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Source options (label_names, lesion_labels, slice, ...)."
    )
    split: str | None = Field("test", description="Split audited (train, val, test; null: every pair).")
    preset: str | None = Field(None, description="Modality preset (default: the model card's modality).")
    size: list[int] | None = Field(None, description="Spatial size (default: the model card's).")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        v = v.strip()
        if v.lower().startswith("phantom:"):
            from medrobust.data.specs import phantom_options

            phantom_options(v)  # ConfigError naming the spec
            return v
        path = Path(v).expanduser()
        if not path.exists():
            raise ValueError(f"data source not found: {v!r} (relative to {str(Path.cwd())!r})")
        return str(path.resolve())

    @field_validator("split")
    @classmethod
    def _split(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() in ("all", "none"):
            return None
        valid = ("train", "val", "test")
        if v.strip().lower() not in valid:
            raise ValueError(f"must be one of {list(valid)}, 'all' or null. Got {v!r}")
        return v.strip().lower()

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str | None) -> str | None:
        return check_preset_name(v)

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return square_size(v)


class SegmentationAttackConfig(ConfigModel):
    """One segmentation attack with its parameters (``goal: erase-lesion`` for the targeted variant)."""

    name: str
    label: str | None = Field(None, description="Name in cells and gates (default: name); unique.")
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _resolve(self) -> SegmentationAttackConfig:
        from medrobust.attacks.segmentation import SEGMENTATION_ATTACKS

        cls = SEGMENTATION_ATTACKS.get(self.name)  # ConfigError with "did you mean"
        self.name = cls.name
        self.label = self.label or cls.name
        if not _NAME_RE.match(self.label) or self.label.lower() == "worst":
            raise ValueError(f"label must match {_NAME_RE.pattern} and not be 'worst'. Got {self.label!r}")
        check_attack_params(cls, self.label, self.params)
        return self

    @property
    def attack_class(self) -> type:
        """The registered segmentation attack class."""
        from medrobust.attacks.segmentation import SEGMENTATION_ATTACKS

        return SEGMENTATION_ATTACKS.get(self.name)

    @property
    def norm(self) -> str:
        """``"linf"`` or ``"l2"``: the budget list the attack reads."""
        return str(getattr(self.attack_class, "norm", None) or "linf")

    @property
    def goal(self) -> str:
        """``"untargeted"`` or ``"erase-lesion"``."""
        return str(self.params.get("goal", "untargeted"))

    def identity(self) -> dict[str, Any]:
        """What makes this attack's results: name, norm and parameters (with their defaults)."""
        import inspect

        out: dict[str, Any] = {}
        for klass in self.attack_class.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name in ("self", "model") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                if p.default is not p.empty:
                    out.setdefault(p.name, p.default)
        out.update(self.params)
        for key in RESERVED_ATTACK_PARAMS:
            out.pop(key, None)
        params = json.loads(json.dumps(out, sort_keys=True, default=str))
        return {"name": self.name, "norm": self.norm, "params": params}


class SegmentationAuditConfig(ConfigModel):
    """A segmentation audit: data, segmenter, defenses, attacks, budgets, threats, gates, run settings."""

    config_name = "segmentation audit config"

    task: Literal["segmentation"] = TASK
    name: str = Field("segmentation audit", description="Title of the report.")
    data: SegmentationDataConfig
    model: ModelConfig
    defenses: list[DefenseConfig] = Field(default_factory=list)
    attacks: list[SegmentationAttackConfig] = Field(min_length=1)
    budgets: Budgets = Field(default_factory=Budgets)
    threats: list[Literal["graybox", "adaptive"]] = Field(default_factory=lambda: list(THREATS))
    n_samples: int | None = Field(50, ge=1, description="Images audited (None: the whole split).")
    batch_size: int = Field(8, ge=1)
    seed: int = Field(0, ge=0)
    device: str = "auto"
    detection_threshold: float = Field(
        DETECTION_THRESHOLD, ge=0.0, le=1.0, description="Dice below which a lesion counts as missed."
    )
    save_examples: int = Field(4, ge=0, le=64, description="Worst-case images kept per cell (overlays).")
    gates: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="Free text copied into the report.")

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, v: Any) -> Any:
        if v != TASK:
            raise ValueError(f"must be {TASK!r} for a segmentation audit. Got {v!r}")
        return v

    @field_validator("attacks", mode="before")
    @classmethod
    def _attack_strings(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s for s in v.split(",") if s.strip()]
        if isinstance(v, list):
            return [{"name": a.strip()} if isinstance(a, str) else a for a in v]
        return v

    @field_validator("threats", mode="before")
    @classmethod
    def _threat_strings(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in ("auto", "cpu") and not re.match(r"^cuda(:\d+)?$", v):
            raise ValueError(f"must be 'auto', 'cpu' or 'cuda[:N]'. Got {v!r}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> SegmentationAuditConfig:
        labels = [a.label for a in self.attacks]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"attack labels must be unique; repeated: {dup} (set 'label')")
        names = [d.name for d in self.defenses]
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            raise ValueError(f"defense names must be unique; repeated: {dup}")
        self.threats = list(dict.fromkeys(self.threats))
        for atk in self.attacks:
            if not getattr(self.budgets, atk.norm):
                raise ValueError(
                    f"attack {atk.label!r} is an {atk.norm} attack but budgets.{atk.norm} is empty"
                )
        from medrobust.evaluation.segmentation.gate import parse_segmentation_gate

        for g in self.gates:
            parse_segmentation_gate(g)
        return self

    # -- helpers -------------------------------------------------------------------------------
    def resolved(self) -> dict[str, Any]:
        """The config as plain JSON-able data (paths absolute, budgets as written)."""
        return json.loads(self.model_dump_json())

    def fingerprint(self) -> str:
        """SHA-256 of the settings that change results (not gates, name or notes)."""
        data = {k: v for k, v in self.resolved().items() if k not in ("gates", "name", "notes")}
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def run_inputs(self) -> dict[str, Any]:
        """The settings that change every cell (attacks, budgets and threats only add or drop cells)."""
        data = self.resolved()
        keep = ("task", "data", "model", "defenses", "n_samples", "batch_size", "seed", "device")
        out = {k: data[k] for k in keep}
        out["detection_threshold"] = data["detection_threshold"]
        out["save_examples"] = data["save_examples"]
        return out

    def attack(self, label: str) -> SegmentationAttackConfig:
        """The attack with this label.

        Raises:
            ConfigError: when no attack has that label.
        """
        for atk in self.attacks:
            if atk.label == label:
                return atk
        raise ConfigError(f"no attack labelled {label!r}; labels are {[a.label for a in self.attacks]}")


def segmentation_config_from_dict(data: dict[str, Any], origin: str = "segmentation audit config") -> Any:
    """Validate a mapping as a :class:`SegmentationAuditConfig` (one ConfigError naming every bad field)."""
    return validate_config(SegmentationAuditConfig, data, origin)


def load_segmentation_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """Read a YAML segmentation audit config, merge ``overrides`` and validate it."""
    from medrobust.run.config import load_config

    return load_config(SegmentationAuditConfig, path, overrides, SegmentationAuditConfig.config_name)


def dump_config(config: SegmentationAuditConfig) -> str:
    """The resolved config as YAML (what ``config.resolved.yaml`` holds)."""
    import yaml

    return yaml.safe_dump(config.resolved(), sort_keys=False)


__all__ = [
    "SegmentationAttackConfig",
    "SegmentationAuditConfig",
    "SegmentationDataConfig",
    "dump_config",
    "load_segmentation_config",
    "read_config",
    "segmentation_config_from_dict",
]

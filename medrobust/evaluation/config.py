"""The audit configuration: a validated YAML file (or the same through CLI flags).

Nothing in a config is executed: attack and denoiser names resolve only through
their registries (unknown names get "did you mean"), budgets accept fractions
such as ``"2/255"``, and paths must exist. Every error names the field.

Example (``pipelines/chest_xray.yaml``)::

    data: {phantom: {modality: chest_xray, n: 120, size: 64}, split: test, preset: chest_xray}
    model: {path: runs/chest_small_cnn}
    defenses:
      - {name: siamese, path: runs/chest_siamese}
      - {name: median, denoiser: median, params: {kernel_size: 3}}
    attacks: [fgsm, {name: pgd, params: {steps: 20}}, cw]
    budgets: {linf: [1/255, 2/255, 8/255], l2: [0.25, 0.5]}
    threats: [graybox, adaptive]
    n_samples: 64
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from medrobust.errors import ConfigError
from medrobust.evaluation.budgets import eps_label
from medrobust.limits import MAX_PHANTOM_IMAGES
from medrobust.run.config import ConfigModel, merge_overrides, read_config
from medrobust.validation import is_range_fraction, parse_number

#: Threat models an audit can run for defended targets (the bare classifier is always "whitebox").
THREATS = ("graybox", "adaptive")
#: The certified "threat": certified accuracy of each target under randomized smoothing (``certify``).
CERTIFIED = "certified"
#: Attack parameters the audit sets itself (budgets and per-cell seeds).
RESERVED_ATTACK_PARAMS = ("eps", "seed", "bounds")
#: Name of the undefended target.
BARE = "bare"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


class _Strict(ConfigModel):
    pass


def check_preset_name(v: str | None) -> str | None:
    """A registered modality preset name (or None), with a "did you mean" for a typo."""
    if v is None:
        return v
    try:
        from medrobust.data import list_presets
    except ImportError:
        return v
    names = list_presets()
    if v not in names:
        from medrobust.registry import did_you_mean

        raise ValueError(f"unknown preset {v!r}.{did_you_mean(v, names)} Valid: {names}")
    return v


def square_size(v: Any) -> Any:
    """``size: 64`` means ``[64, 64]``; anything else is left for the field's own validation."""
    if isinstance(v, int) and not isinstance(v, bool):
        return [v, v]
    return v


def check_attack_params(attack: type, who: str, params: dict[str, Any]) -> None:
    """Refuse parameters the audit sets itself or the attack does not take; check their ranges now.

    Args:
        attack: The registered attack class.
        who: The attack's name or label, for messages.
        params: The config's parameters of the attack.
    """
    reserved = sorted(set(params) & set(RESERVED_ATTACK_PARAMS))
    if reserved:
        raise ValueError(
            f"attack {who!r}: {reserved} are set by the audit (use 'budgets' for eps; "
            "seeds derive from the run seed)"
        )
    valid = set(attack.param_names()) - set(RESERVED_ATTACK_PARAMS)
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ValueError(f"attack {who!r} has no parameter(s) {unknown}. Valid: {sorted(valid)}")
    attack.check_params(params)  # ranges and caps now, not after the data are read


def _check_path(value: Path | None, what: str) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to the working folder: {str(path.absolute())!r})"
        raise ValueError(f"{what} not found: {str(path)!r}{where}")
    return path.resolve()


class PhantomSpec(_Strict):
    """Built-in synthetic data, generated once into a cache folder (no downloads)."""

    modality: str = Field(description="Phantom modality, e.g. chest_xray.")
    n: int = Field(
        200,
        ge=4,
        le=MAX_PHANTOM_IMAGES,
        description="Images to generate (train/val/test); at most medrobust.limits.MAX_PHANTOM_IMAGES.",
    )
    size: int = Field(64, ge=8, le=1024)
    seed: int = Field(0, ge=0)
    cache_dir: Path | None = Field(None, description="Folder for the generated files (default runs/cache).")

    @field_validator("modality")
    @classmethod
    def _known_modality(cls, v: str) -> str:
        try:
            from medrobust.data import list_phantoms
        except ImportError:  # data package not importable: checked again when loading
            return v
        names = list_phantoms()
        if v not in names:
            from medrobust.registry import did_you_mean

            raise ValueError(f"unknown phantom modality {v!r}.{did_you_mean(v, names)} Valid: {names}")
        return v


class DataConfig(_Strict):
    """Where the audit images come from."""

    source: Path | None = Field(None, description="npz / CSV / class folders / DICOM / NIfTI path.")
    phantom: PhantomSpec | None = None
    kind: str | None = Field(None, description="Source kind when auto-detection is not wanted.")
    split: str | None = Field(
        "auto",
        description="Split to audit: 'auto' (the source's own test split; a source without splits is "
        "audited whole unless the model was trained on it), 'all' (or null: every record), or "
        "train/val/test.",
    )
    preset: str | None = Field(None, description="Modality preset (default: the phantom modality).")
    size: list[int] | None = Field(None, description="Spatial size (default: the model card's).")
    preset_options: dict[str, Any] | None = Field(
        None,
        description="Preset options (channels, scaling, percentiles, nonzero, value_range, bounds; the size "
        "is 'size'); they override the model card's preset_options key by key.",
    )
    on_error: Literal["raise", "skip"] = "raise"
    cache_dir: Path | None = Field(
        None,
        description="Folder caching preprocessed images as .npy (skips decoding on later runs; "
        "results do not depend on it).",
    )

    @field_validator("source")
    @classmethod
    def _source_exists(cls, v: Path | None) -> Path | None:
        return _check_path(v, "data source")

    @field_validator("split")
    @classmethod
    def _known_split(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            from medrobust.data.base import SPLIT_ALIASES
        except ImportError:  # data package not importable: checked again when loading
            return v
        valid = ["auto", "all", *sorted(SPLIT_ALIASES)]
        if v.strip().lower() not in valid and v.strip().lower() != "none":
            from medrobust.registry import did_you_mean

            raise ValueError(f"unknown split {v!r}.{did_you_mean(v, valid)} Valid: {valid}")
        return v

    @field_validator("preset_options")
    @classmethod
    def _preset_options(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        from medrobust.data.presets.base import PRESET_OPTIONS, check_preset_options

        return check_preset_options(
            v, "data.preset_options", [k for k in PRESET_OPTIONS if k != "spatial_size"]
        )

    @field_validator("size", mode="before")
    @classmethod
    def _size_list(cls, v: Any) -> Any:
        return square_size(v)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        return check_preset_name(v)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.source is None) == (self.phantom is None):
            raise ValueError("give exactly one of 'source' (a path) or 'phantom' (built-in data)")
        if self.preset is None and self.phantom is not None:
            self.preset = self.phantom.modality
        return self


#: Model paths that name a library model or a live module instead of a file
#: (``medrobust.models.hub.MODEL_SCHEMES``; resolved and checked by ``load_model``).
_MODEL_SPEC_RE = re.compile(r"^(torchvision|timm|module):\S+$")


class ModelConfig(_Strict):
    """The audited classifier: a run folder, an ONNX/TorchScript/.pt2 file, a MONAI bundle or a library model.

    Library models are ``torchvision:NAME`` / ``timm:NAME`` with local ``weights``.
    """

    path: Path
    card: Path | None = Field(None, description="card.json for imported models.")
    weights: Path | None = Field(
        None, description="Local weights for torchvision:NAME / timm:NAME models (never downloaded)."
    )
    format: str | None = Field(
        None,
        description="Read the model file as safetensors, state_dict, torchscript, pt2 or onnx whatever its "
        "suffix (None: from the suffix; TorchScript is never inferred from .pt/.pth/.bin/.ckpt).",
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from medrobust.models.imports import FORMATS
        from medrobust.validation import check_choice

        return check_choice(v.strip().lower().replace("-", "_"), "model.format", FORMATS)

    @field_validator("path")
    @classmethod
    def _path_exists(cls, v: Path) -> Path:
        if _MODEL_SPEC_RE.match(str(v)):
            return v
        return _check_path(v, "model")  # type: ignore[return-value]

    @field_validator("weights")
    @classmethod
    def _weights_exist(cls, v: Path | None) -> Path | None:
        return _check_path(v, "model weights")

    @model_validator(mode="after")
    def _weights_for_library_models(self) -> ModelConfig:
        if self.weights is not None and not re.match(r"^(torchvision|timm):", str(self.path)):
            raise ValueError(
                "'weights' applies to torchvision:NAME and timm:NAME models; "
                f"{str(self.path)!r} carries its own"
            )
        return self

    @field_validator("card")
    @classmethod
    def _card_exists(cls, v: Path | None) -> Path | None:
        return _check_path(v, "model card")


class DefenseConfig(_Strict):
    """A defended target: a trained denoiser run folder or a registry denoiser with params."""

    name: str
    path: Path | None = None
    denoiser: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME_RE.match(v) or v == BARE:
            raise ValueError(f"must match {_NAME_RE.pattern} and not be {BARE!r}. Got {v!r}")
        return v

    @field_validator("path")
    @classmethod
    def _path_exists(cls, v: Path | None) -> Path | None:
        return _check_path(v, "denoiser run folder")

    @model_validator(mode="after")
    def _one_kind(self) -> DefenseConfig:
        if (self.path is None) == (self.denoiser is None):
            raise ValueError(f"defense {self.name!r}: give exactly one of 'path' or 'denoiser'")
        if self.path is not None and self.params:
            raise ValueError(f"defense {self.name!r}: 'params' only apply to registry denoisers")
        if self.denoiser is not None:
            from medrobust.defenses.denoisers import DENOISERS

            DENOISERS.get(self.denoiser)  # ConfigError with "did you mean"
        return self


class AttackConfig(_Strict):
    """One attack with its parameters (budgets come from ``budgets``)."""

    name: str
    label: str | None = Field(None, description="Display name (default: name); unique per audit.")
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _resolve(self) -> AttackConfig:
        from medrobust.attacks import ATTACKS

        cls = ATTACKS.get(self.name)  # ConfigError with "did you mean"
        self.name = cls.name
        if self.label is None:
            self.label = cls.name
        if not _NAME_RE.match(self.label):
            raise ValueError(f"label must match {_NAME_RE.pattern}. Got {self.label!r}")
        check_attack_params(cls, self.name, self.params)
        return self

    def full_params(self) -> dict[str, Any]:
        """Every parameter the attack runs with: its constructor defaults updated with ``params``.

        The audit's own parameters (``eps``, ``seed``, ``bounds``) are left out. Two configs
        with equal ``full_params`` run the same attack even where one spells out a default.
        """
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
        return json.loads(json.dumps(out, sort_keys=True, default=str))

    def identity(self) -> dict[str, Any]:
        """What makes this attack's results: its registered name, norm and full parameters."""
        return {"name": self.name, "norm": self.norm, "minimal": self.minimal, "params": self.full_params()}

    @property
    def attack_class(self) -> type:
        """The registered attack class."""
        from medrobust.attacks import ATTACKS

        return ATTACKS.get(self.name)

    @property
    def minimal(self) -> bool:
        """True for unbounded minimal-perturbation attacks (CW, DeepFool): run once, budgets derived.

        A minimal attack that takes a budget (FAB reports success within ``eps``) runs per ε.
        """
        cls = self.attack_class
        return bool(getattr(cls, "minimal", False)) and "eps" not in cls.param_names()

    @property
    def norm(self) -> str:
        """The norm budgets are measured in ("linf" or "l2")."""
        norm = self.params.get("norm", getattr(self.attack_class, "norm", None))
        if norm is None and self.minimal:
            norm = "l2"  # CW-L2 and other unbounded L2 attacks
        if norm not in ("linf", "l2"):
            raise ConfigError(f"attack {self.label!r}: cannot tell its norm (got {norm!r}).")
        return norm


class Budgets(_Strict):
    """Perturbation budgets per norm, kept as written: numbers in image units, ``"k/255"`` of the range.

    Each budget is converted once, with the model card's bounds, by
    :func:`medrobust.validation.budget_to_image_units` when the audit is planned
    (:func:`medrobust.evaluation.planning.resolve_budgets`): ``"2/255"`` is 0.0078 on a [0, 1]
    card and 32.1 HU on a CT card with bounds [-1024, 3071]; a number is already image units.
    """

    linf: list[str | float] = Field(default_factory=list)
    l2: list[str | float] = Field(default_factory=list)

    @field_validator("linf", "l2", mode="before")
    @classmethod
    def _parse(cls, v: Any, info: Any) -> list[str | float]:
        if v is None:
            return []
        if isinstance(v, (str, int, float)):
            v = [v]
        out: dict[tuple[bool, float], str | float] = {}
        for item in v:
            eps = parse_number(item, f"budgets.{info.field_name}")
            if not eps > 0:
                raise ConfigError(f"The 'budgets.{info.field_name}' values must be > 0. Got {item!r}.")
            fraction = is_range_fraction(item)
            out.setdefault((fraction, eps), item.strip() if fraction else eps)
        return [out[k] for k in sorted(out, key=lambda k: k[1])]


class ChecksConfig(_Strict):
    """Thresholds of the audit's degenerate-target checks (docs/flags.md)."""

    chance_margin: float = Field(
        0.10, ge=0, le=1, description="Margin above chance for the chance-level flag (0.10 = 10 points)."
    )
    max_defense_cost: float = Field(
        0.05, ge=0, le=1, description="Clean-accuracy points a defense may cost before defense-cost fires."
    )
    min_samples: int = Field(30, ge=1, description="Audited samples below which small-sample fires.")
    gradient_free_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="gradient-free-underpowered fires when SPSA/Square fool fewer than this share of "
        "FGSM's samples on the bare model.",
    )

    @field_validator("chance_margin", "max_defense_cost", "gradient_free_ratio", mode="before")
    @classmethod
    def _number(cls, v: Any, info: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            return (
                parse_number(text[:-1], f"checks.{info.field_name}") / 100
                if text.endswith("%")
                else (parse_number(text, f"checks.{info.field_name}"))
            )
        return v


class EOTConfig(_Strict):
    """Expectation over Transformation for randomised (stochastic) targets.

    ``mode: auto`` runs every attack that has an EOT form with it on the crafts of a stochastic
    target (``autoattack`` as ``version: rand``, ``apgd-*`` with ``eot_iter = n``, ``eot-pgd``
    already is); deterministic targets keep the attacks as written. ``off`` runs them as written.
    """

    mode: Literal["off", "auto"] = "off"
    n: int = Field(20, ge=2, le=1000, description="EOT draws per gradient in auto mode.")


class CertifyConfig(_Strict):
    """Randomized-smoothing certificates of every target (the ``certified`` threat).

    Each target is smoothed with Gaussian noise of ``sigma`` (image units, or ``"k/255"`` of the
    card's range; the defense's denoiser follows the noise: denoised smoothing); CERTIFY with
    ``n0`` selection and ``n`` estimation draws at level ``alpha`` gives each sample a radius, and
    a certified cell per ``budgets.l2`` radius holds the certified accuracy with its exact interval.
    """

    sigma: str | float = Field(description="Noise standard deviation (image units or 'k/255').")
    n0: int = Field(100, ge=1, le=MAX_PHANTOM_IMAGES)
    n: int = Field(1000, ge=1, le=MAX_PHANTOM_IMAGES)
    alpha: float = Field(0.001, gt=0, lt=0.5)
    batch_size: int = Field(400, ge=1, description="Noisy rows per forward pass.")

    @field_validator("sigma", mode="before")
    @classmethod
    def _sigma(cls, v: Any) -> Any:
        value = parse_number(v, "certify.sigma")
        if not value > 0:
            raise ConfigError(f"The 'certify.sigma' parameter must be > 0. Got {v!r}.")
        return v.strip() if isinstance(v, str) else float(v)


class AuditConfig(_Strict):
    """A full audit: data, model, defenses, attacks, budgets, threats and run settings."""

    config_name = "audit config"

    name: str = Field("audit", description="Title of the report.")
    data: DataConfig
    model: ModelConfig
    defenses: list[DefenseConfig] = Field(default_factory=list)
    attacks: list[AttackConfig] = Field(min_length=1)
    budgets: Budgets = Field(default_factory=Budgets)
    threats: list[Literal["graybox", "adaptive", "certified"]] = Field(default_factory=lambda: list(THREATS))
    protocol: Literal["standard", "defense"] = Field(
        "standard",
        description="'defense': adaptive cells of every defended target also get standard AutoAttack, "
        "BPDA targets Square-5000 beside it, and SPSA/Square budgets scale with the image size.",
    )
    eot: EOTConfig = Field(default_factory=EOTConfig)
    certify: CertifyConfig | None = None
    n_samples: int | None = Field(100, ge=1, description="Samples audited (None: the whole split).")
    batch_size: int = Field(32, ge=1)
    num_workers: int = Field(
        0, ge=0, description="DataLoader worker processes reading samples (results do not depend on it)."
    )
    seed: int = Field(0, ge=0)
    device: str = "auto"
    save_examples: int = Field(8, ge=0, description="Adversarial examples saved per cell (gallery).")
    gates: list[str] = Field(default_factory=list)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    notes: list[str] = Field(default_factory=list, description="Free text copied into the report.")

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

    @field_validator("eot", mode="before")
    @classmethod
    def _eot_string(cls, v: Any) -> Any:
        return {"mode": v} if isinstance(v, str) else v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in ("auto", "cpu") and not re.match(r"^cuda(:\d+)?$", v):
            raise ValueError(f"must be 'auto', 'cpu' or 'cuda[:N]'. Got {v!r}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> AuditConfig:
        labels = [a.label for a in self.attacks]
        if any(x.lower() == "worst" for x in labels):
            raise ValueError("attack label 'worst' is reserved for the per-sample worst case (set 'label')")
        if any(x.lower() == CERTIFIED for x in labels):
            raise ValueError(f"attack label {CERTIFIED!r} is reserved for certified cells (set 'label')")
        if CERTIFIED in self.threats and (self.certify is None or not self.budgets.l2):
            raise ValueError(
                f"threat {CERTIFIED!r} needs a 'certify' block (sigma, n0, n, alpha) and budgets.l2 radii; "
                f"got certify={self.certify!r}, budgets.l2={self.budgets.l2!r}"
            )
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"attack labels must be unique; repeated: {dup} (set 'label')")
        names = [d.name for d in self.defenses]
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            raise ValueError(f"defense names must be unique; repeated: {dup}")
        self.threats = list(dict.fromkeys(self.threats))
        for atk in self.attacks:
            if not atk.minimal and not getattr(self.budgets, atk.norm):
                raise ValueError(
                    f"attack {atk.label!r} is a bounded {atk.norm} attack but budgets.{atk.norm} is empty"
                )
        from medrobust.evaluation.gate import parse_gate

        for g in self.gates:
            parse_gate(g)
        return self

    # -- helpers ---------------------------------------------------------------------------
    def resolved(self) -> dict[str, Any]:
        """The config as plain JSON-able data (paths absolute, budgets as written)."""
        return json.loads(self.model_dump_json())

    def fingerprint(self) -> str:
        """SHA-256 of the settings that change results (not gates, name, notes, num_workers, data.cache_dir).

        It covers the config text only (paths, not the files behind them). Resuming compares
        :meth:`run_inputs` plus the content hashes of the model, defenses and data, and each
        cell's own key (see :mod:`medrobust.evaluation.state`).
        """
        data = self.resolved()
        for key in ("gates", "name", "notes", "num_workers", "checks"):
            data.pop(key, None)
        if isinstance(data.get("data"), dict):
            data["data"].pop("cache_dir", None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def run_inputs(self) -> dict[str, Any]:
        """The settings that change every cell: data, model, defenses, samples, batching, seed, device.

        Attacks, budgets and threats are *not* here: they only add or remove cells, each of
        which carries its own key, so changing them keeps every unchanged finished cell.
        Cache folders and worker counts are left out (they do not change results).
        """
        data = self.resolved()
        keep = ("data", "model", "defenses", "n_samples", "batch_size", "seed", "device", "save_examples")
        out = {k: data[k] for k in keep}
        out["data"].pop("cache_dir", None)
        if isinstance(out["data"].get("phantom"), dict):
            out["data"]["phantom"].pop("cache_dir", None)
        return out

    def attack(self, label: str) -> AttackConfig:
        """The attack with this label.

        Raises:
            ConfigError: when no attack has that label.
        """
        for atk in self.attacks:
            if atk.label == label:
                return atk
        raise ConfigError(f"no attack labelled {label!r}; labels are {[a.label for a in self.attacks]}")


__all__ = [
    "AuditConfig",
    "config_from_dict",
    "eps_label",
    "load_config",
    "merge_overrides",
    "read_config_data",
]


def config_from_dict(data: dict[str, Any], source: str = "audit config") -> AuditConfig:
    """Validate a config mapping; errors name the field and what was expected.

    Raises:
        ConfigError: for any invalid field (unknown attack → "did you mean", bad ε, missing file).
    """
    return AuditConfig.from_dict(data, source)


def read_config_data(path: str | Path) -> dict[str, Any]:
    """Read a YAML audit config as a plain mapping, not yet validated.

    Command-line overrides are merged into this mapping before validation, so a config
    whose model path does not exist here can still be used with ``--model``.
    """
    return read_config(path, AuditConfig.config_name)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> AuditConfig:
    """Read a YAML audit config, merge ``overrides`` and validate it (the kernel's loader)."""
    from medrobust.run.config import load_config as load

    return load(AuditConfig, path, overrides, AuditConfig.config_name)


def dump_config(config: AuditConfig) -> str:
    """The resolved config as YAML (what ``config.resolved.yaml`` holds)."""
    return yaml.safe_dump(config.resolved(), sort_keys=False)

"""Typed configuration of the denoiser study (``pipelines/denoiser_study.yaml``).

Only registered names are accepted (denoisers from ``medrobust.defenses.denoisers``);
noise levels and budgets are fractions of the dynamic range and may be written as
fractions ("15/255"). A change of any field below changes the study fingerprint, so a
resumed run with a different config is refused unless ``--fresh`` is given.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medrobust.denoising.data import DenoisingData
from medrobust.denoising.training import NoiseLevels, parse_sigma
from medrobust.errors import ConfigError
from medrobust.run.config import ConfigModel
from medrobust.validation import parse_number

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _check_name(v: str) -> str:
    if not _NAME.match(v):
        raise ConfigError(f"Member names may use letters, digits and '_.+-' only. Got {v!r}.")
    return v


def _fraction(v: Any, name: str) -> float:
    out = parse_number(v, name)
    if out <= 0:
        raise ConfigError(f"The {name!r} parameter must be > 0. Got {v!r}.")
    return out


class TrainingDefaults(BaseModel):
    """Optimisation defaults for every trained member (overridable per member)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=8, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=1e-3, gt=0.0, le=1.0)
    patch_size: int | None = Field(default=None, ge=8)


class MemberTraining(NoiseLevels):
    """How one deep member is trained (omitted fields: study defaults, σ = study σ)."""

    epochs: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0.0, le=1.0)
    patch_size: int | None = Field(default=None, ge=8)


class MemberSpec(BaseModel):
    """One denoiser of the zoo.

    Attributes:
        name: Unique label used in tables and state files (letters, digits, ``_.+-``).
        arch: Registered denoiser name (deep ones are trained, classical ones built).
        params: Constructor arguments.
        train: Training settings of a deep member (default: non-blind at the study σ).
        checkpoint: Load this trained denoiser folder instead of training.
        attack_steps: Override of ``attack.steps`` for this member (e.g. fewer steps for
            a slow classical filter such as BM3D); recorded in the results.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    arch: str
    params: dict[str, Any] = Field(default_factory=dict)
    train: MemberTraining | None = None
    checkpoint: str | None = None
    attack_steps: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        from medrobust.defenses.denoisers import DENOISERS

        kind = DENOISERS.get(v).kind  # unknown names raise with a "did you mean" hint
        if kind == "hybrid":
            raise ConfigError(
                f"Declare hybrid denoisers under 'hybrids' (classical + deep members). Got {v!r}."
            )
        return v

    @property
    def kind(self) -> str:
        """The registered denoiser's kind ("deep" or "classical")."""
        from medrobust.defenses.denoisers import DENOISERS

        return DENOISERS.get(self.arch).kind


class HybridSpec(BaseModel):
    """A classical + deep combination built from two members (registered ``hybrid`` denoiser)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    classical: str
    deep: str
    mode: Literal["classical_then_deep", "deep_then_classical", "blend"] = "classical_then_deep"
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    attack_steps: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)


class AttackSettings(BaseModel):
    """Denoising-PGD settings shared by all members.

    Attributes:
        eps: L∞ budget: ``"k/255"`` (k/255 of the range) or a number in image units.
        steps: PGD iterations.
        alpha: L∞ step (default 2.5 * eps / steps).
        l2_rms: Per-pixel RMS of the zero-mean L2 attack, units as ``eps``
            (``eps_l2 = l2_rms * sqrt(C*H*W)``);
            null disables the L2 attack.
        classical: White-box method for non-differentiable classical members: "bpda"
            (denoise-pgd with the straight-through gradient) or "spsa" (gradient-free);
            differentiable filters (e.g. the torch Gaussian) always get the exact gradient,
            hybrids always use end-to-end BPDA.
        spsa_samples: Direction pairs per SPSA step.
        clip: "none": ``y + δ`` is not clamped; "extended": clamped to
            ``[low − clip_sigmas·σ, high + clip_sigmas·σ]``.
        transfer_norms: Norms whose adversarial inputs are transferred between all members.
    """

    model_config = ConfigDict(extra="forbid")

    eps: float | str = "4/255"
    steps: int = Field(default=20, ge=1)
    alpha: float | str | None = None
    l2_rms: float | str | None = "2/255"
    classical: Literal["bpda", "spsa"] = "bpda"
    spsa_samples: int = Field(default=8, ge=1)
    clip: Literal["none", "extended"] = "none"
    clip_sigmas: float = Field(default=3.0, gt=0.0)
    transfer_norms: list[Literal["linf", "l2"]] = Field(default_factory=lambda: ["linf"])

    @field_validator("eps", "alpha", "l2_rms", mode="before")
    @classmethod
    def _budget(cls, v: Any, info: Any) -> float | str | None:
        # Kept as written: "k/255" is k/255 of the data's range, a number is in image units;
        # the attacks convert once the bounds are known (medrobust.validation.budget_to_image_units).
        if v is None and info.field_name != "eps":
            return None
        _fraction(v, info.field_name)
        return v.strip() if isinstance(v, str) else float(v)

    @model_validator(mode="after")
    def _check(self) -> AttackSettings:
        if "l2" in self.transfer_norms and self.l2_rms is None:
            raise ConfigError(
                "attack.transfer_norms contains 'l2' but the L2 attack is disabled (l2_rms: null)."
            )
        return self


class DenoiserStudyConfig(ConfigModel):
    """The whole study: data, noise level, zoo, hybrids and attack settings."""

    config_name = "denoiser study config"

    version: Literal[1] = 1
    seed: int = Field(default=0, ge=0)
    data: DenoisingData = Field(default_factory=DenoisingData)
    sigma: float = 15 / 255
    n_test: int = Field(default=16, ge=1)
    batch_size: int = Field(default=16, ge=1)
    device: str = "cpu"
    training: TrainingDefaults = Field(default_factory=TrainingDefaults)
    attack: AttackSettings = Field(default_factory=AttackSettings)
    models: list[MemberSpec] = Field(min_length=2)
    hybrids: list[HybridSpec] = Field(default_factory=list)
    gallery: int = Field(default=2, ge=0, le=8)

    @field_validator("sigma", mode="before")
    @classmethod
    def _sigma(cls, v: Any) -> float:
        out = parse_sigma(v)
        if out <= 0:
            raise ConfigError(f"The 'sigma' parameter of the study must be > 0. Got {v!r}.")
        return out

    @model_validator(mode="after")
    def _check(self) -> DenoiserStudyConfig:
        names = [m.name for m in self.models] + [h.name for h in self.hybrids]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"Member names must be unique. Repeated: {dupes}.")
        kinds = {m.name: m.kind for m in self.models}
        for h in self.hybrids:
            for role in ("classical", "deep"):
                ref = getattr(h, role)
                if ref not in kinds:
                    raise ConfigError(
                        f"Hybrid {h.name!r}: {role} member {ref!r} is not declared under 'models'. "
                        f"Members: {sorted(kinds)}."
                    )
                if kinds[ref] != role:
                    raise ConfigError(f"Hybrid {h.name!r}: member {ref!r} is {kinds[ref]}, not {role}.")
        for m in self.models:
            if m.kind != "deep" and (m.train is not None or m.checkpoint is not None):
                raise ConfigError(
                    f"Member {m.name!r} ({m.arch}) is classical: 'train'/'checkpoint' do not apply."
                )
        return self

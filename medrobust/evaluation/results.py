"""The typed results schema (``medrobust.audit/1``): what results.json holds, read by attribute.

Every part of an audit's results is a dataclass here: the document (:class:`AuditDocument`),
its cells (:class:`Cell`, with :class:`CellMetrics` and per-sample :class:`SampleOutcomes`),
95 % intervals (:class:`Interval`), flags (:class:`Flag`), gate outcomes
(:class:`GateOutcome`), worst cases (:class:`WorstCase`), the verdict (:class:`Verdict`),
the audited data (:class:`DataInfo`), targets (:class:`TargetInfo`) and provenance
(:class:`Provenance`). Gates, flags, the verdict, the ``--json`` summary, the Python API,
the report templates, tables and plots, and the notebooks read these attributes
(``cell.metrics.robust_accuracy``), never ``cell["metrics"]["robust_accuracy"]``.

The JSON on disk is unchanged: :meth:`Record.to_dict` writes the keys in the order
results.json always had, a record read by :meth:`Record.from_dict` writes its keys back in
the order it was read (``AuditDocument.from_dict(d).to_dict() == d``, byte for byte once
dumped), and keys this schema does not know are kept in ``extra``. Records read from older
files may lack parts (no intervals, no verdict): those attributes are ``None``.

>>> cell = Cell.from_dict({"key": "bare/whitebox/pgd@2/255", "metrics": {"robust_accuracy": 0.5}})
>>> cell.metrics.robust_accuracy, cell.metrics.get("success_rate"), cell.to_dict()["metrics"]
(0.5, None, {'robust_accuracy': 0.5})
"""

# ruff: noqa: RUF009  (nested() and plain() return dataclasses.field(...) with JSON metadata)
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

#: Schema of results.json.
SCHEMA = "medrobust.audit/1"

R = TypeVar("R", bound="Record")


def _load(kind: Any) -> Callable[[Any], Any]:
    return kind.from_dict if isinstance(kind, type) and issubclass(kind, Record) else kind


def nested(kind: Any, *, optional: bool = False, key: str | None = None, default: Any = None) -> Any:
    """A record field holding ``kind`` (a :class:`Record` class or a loader applied to the JSON value).

    Args:
        kind: How the JSON value is read (``None`` stays ``None``).
        optional: Left out of the JSON when ``None`` (a key older files or other callers lack).
        key: The JSON key when it is not a Python name (``"import"``, ``"half_width_at_0.5"``).
        default: The attribute's value when the key is absent.
    """
    meta = {"load": _load(kind), "optional": optional, "key": key}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def plain(*, optional: bool = False, key: str | None = None, default: Any = None) -> Any:
    """A record field holding a plain JSON value (see :func:`nested`)."""
    return nested(None, optional=optional, key=key, default=default)


def list_of(kind: type[Record]) -> Callable[[Any], list[Any]]:
    """Loader of a JSON list of ``kind`` records."""
    return lambda values: [kind.from_dict(v) if isinstance(v, Mapping) else v for v in values]


def dict_of(kind: type[Record]) -> Callable[[Any], dict[str, Any]]:
    """Loader of a JSON object whose values are ``kind`` records (``None`` values kept)."""
    return lambda values: {k: (kind.from_dict(v) if isinstance(v, Mapping) else v) for k, v in values.items()}


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


@dataclass
class Record:
    """Base of the results records: read from and written to JSON objects, key order kept.

    Attributes:
        extra: JSON keys this schema does not know, kept as read (in their place on writing).
    """

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False)
    _keys: tuple[str, ...] | None = field(default=None, kw_only=True, repr=False, compare=False)

    _SPEC: ClassVar[dict[type, list[tuple[str, str, Callable[[Any], Any] | None, bool]]]] = {}

    @classmethod
    def _spec(cls) -> list[tuple[str, str, Callable[[Any], Any] | None, bool]]:
        """``(attribute, JSON key, loader, optional)`` per field, in JSON order."""
        spec = Record._SPEC.get(cls)
        if spec is None:
            spec = [
                (
                    f.name,
                    f.metadata.get("key") or f.name,
                    f.metadata.get("load"),
                    f.metadata.get("optional", False),
                )
                for f in fields(cls)
                if f.name not in ("extra", "_keys")
            ]
            Record._SPEC[cls] = spec
        return spec

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any] | R) -> R:
        """Read a JSON object (a record is returned as it is); missing keys leave defaults."""
        if isinstance(data, cls):
            return data
        if isinstance(data, Record):
            data = data.to_dict()
        by_key = {key: (name, load) for name, key, load, _ in cls._spec()}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key not in by_key:
                extra[key] = value
                continue
            name, load = by_key[key]
            kwargs[name] = load(value) if load is not None and value is not None else value
        obj = cls(**kwargs, extra=extra)
        obj._keys = tuple(data)
        return obj

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: keys in the order read (or declared), then fields set since, then extras."""
        spec = self._spec()
        by_key = {key: name for name, key, _, _ in spec}
        out: dict[str, Any] = {}
        for key in self._keys or ():
            if key in by_key:
                out[key] = _dump(getattr(self, by_key[key]))
            elif key in self.extra:
                out[key] = self.extra[key]
        defaults = self._defaults() if self._keys is not None else {}
        for name, key, _, optional in spec:
            if key in out:
                continue
            value = getattr(self, name)
            if value is None and optional:
                continue
            if self._keys is not None and (value is None or value == defaults[name]):
                continue  # absent when read and not set since
            out[key] = _dump(value)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def _defaults(cls) -> dict[str, Any]:
        out = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:
                out[f.name] = f.default_factory()
        return out

    def get(self, name: str, default: Any = None) -> Any:
        """Attribute ``name`` (or an extra key), ``default`` when absent or None: for names held in data."""
        value = getattr(self, name, None) if name in {n for n, *_ in self._spec()} else self.extra.get(name)
        return default if value is None else value


# -- intervals, metrics, samples ------------------------------------------------------------------
@dataclass
class Interval(Record):
    """A point estimate with its 95 % interval (``ci`` None: undefined) and how it was computed.

    Bootstrap intervals also carry ``n_boot`` (and ``n_clusters`` when patients were
    resampled), macro averages ``average``; metrics the attacks do not aim at ``descriptive``.
    """

    value: float | None = None
    ci: list[float] | None = None
    method: str | None = None
    n: int | None = None
    n_clusters: int | None = plain(optional=True)
    n_boot: int | None = plain(optional=True)
    average: str | None = plain(optional=True)
    descriptive: bool | None = plain(optional=True)

    @property
    def low(self) -> float | None:
        """Lower end of the interval."""
        return None if not self.ci else self.ci[0]

    @property
    def high(self) -> float | None:
        """Upper end of the interval."""
        return None if not self.ci else self.ci[1]


def interval_or_none(value: Any) -> Interval | None:
    """An :class:`Interval` from JSON (or ``None``)."""
    return None if value is None else Interval.from_dict(value)


@dataclass
class CleanMetrics(Record):
    """A target's clean metrics, predictions and probabilities (``targets[].clean``)."""

    accuracy: float | None = None
    balanced_accuracy: float | None = None
    auroc: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    pred: list[int] | None = None
    probs: list[list[float]] | None = None
    intervals: dict[str, Interval] | None = nested(dict_of(Interval), optional=True)


@dataclass
class CellMetrics(Record):
    """A cell's metrics (``cells[].metrics``; see :mod:`medrobust.evaluation.metrics`)."""

    n: int | None = None
    n_clean_correct: int | None = None
    n_attacked: int | None = None
    n_fooled: int | None = None
    clean_accuracy: float | None = None
    robust_accuracy: float | None = None
    clean_balanced_accuracy: float | None = None
    balanced_accuracy: float | None = None
    clean_auroc: float | None = None
    auroc: float | None = None
    clean_sensitivity: float | None = None
    sensitivity: float | None = None
    clean_specificity: float | None = None
    specificity: float | None = None
    success_rate: float | None = None
    median_linf: float | None = None
    median_l2: float | None = None
    median_queries: float | None = None


@dataclass
class SampleOutcomes(Record):
    """A cell's per-sample outcomes, one entry per audited sample position (``cells[].samples``).

    ``adv_pred`` is the effective prediction under attack (worst of the clean input and the
    in-budget adversarial example); ``adv_raw_pred`` the prediction on the adversarial example.
    """

    position: list[int] | None = None
    index: list[int] | None = None
    label: list[int] | None = None
    clean_pred: list[int] | None = None
    adv_pred: list[int] | None = None
    adv_raw_pred: list[int] | None = None
    success: list[bool] | None = None
    used_adv: list[bool] | None = None
    attacked: list[bool] | None = None
    linf: list[float] | None = None
    l2: list[float] | None = None
    queries: list[int] | None = None
    adv_probs: list[list[float]] | None = None


class Addressed:
    """What cells, worst cases and certified cells share: gates address them the same way.

    The dataclasses mixing this in have ``target``, ``threat``, ``attack``, ``eps``,
    ``eps_label``, ``metrics`` (with ``robust_accuracy``) and ``intervals``.
    """

    target: str | None
    threat: str | None
    attack: str | None
    eps: float | None
    eps_label: str | None
    metrics: Any
    intervals: dict[str, Interval] | None

    @property
    def robust_accuracy(self) -> float:
        """Robust (or certified) accuracy, NaN when undefined, for sorting and comparisons."""
        value = self.metrics.robust_accuracy
        return math.nan if value is None else float(value)

    def interval(self, metric: str) -> Interval | None:
        """The 95 % interval of ``metric`` (``None`` when there is none)."""
        return (self.intervals or {}).get(metric)

    @property
    def ident(self) -> str:
        """``target/threat/attack@eps`` (gate messages)."""
        return f"{self.target}/{self.threat}/{self.attack}@{self.eps_label or self.eps}"


@dataclass
class Cell(Addressed, Record):
    """One cell: target × threat × attack × budget, its metrics and per-sample outcomes.

    ``eps`` is the budget in image units of the card's bounds (``None``: unbounded), and
    ``eps_label`` the budget as the config writes it (``"2/255"`` = 2/255 of the range).
    """

    id: str | None = None
    key: str | None = None
    target: str | None = None
    threat: str | None = None
    attack: str | None = None
    attack_name: str | None = None
    norm: str | None = None
    eps: float | None = None
    eps_label: str | None = None
    minimal: bool | None = None
    gradient_free: bool | None = None
    craft: str | None = None
    craft_on: str | None = None
    seed: int | None = None
    bpda: bool | None = None
    params: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    metrics: CellMetrics = nested(CellMetrics, default=CellMetrics)
    n_over_budget: int | None = None
    seconds: float | None = None
    craft_seconds: float | None = None
    eval_seconds: float | None = None
    examples: str | None = None
    samples: SampleOutcomes = nested(SampleOutcomes, default=SampleOutcomes)
    cell_fingerprint: str | None = plain(optional=True)
    intervals: dict[str, Interval] | None = nested(dict_of(Interval), optional=True)
    descriptive: list[str] | None = plain(optional=True)
    #: Whether the attack averaged its gradients over draws of a randomised target (EOT).
    eot: bool | None = plain(optional=True)


@dataclass
class WorstMetrics(Record):
    """Metrics of a per-sample worst case."""

    n: int | None = None
    n_robust: int | None = None
    robust_accuracy: float | None = None
    clean_accuracy: float | None = None


@dataclass
class WorstCase(Addressed, Record):
    """The per-sample worst case over the attacks of a norm and budget (``worst_cases[]``).

    It addresses like a cell (``attack="worst"``, gates ``worst@EPS``); ``threat="all"``
    combines every threat model of the target.
    """

    key: str | None = None
    target: str | None = None
    threat: str | None = None
    attack: str | None = None
    norm: str | None = None
    eps: float | None = None
    eps_label: str | None = None
    attacks: list[str] | None = None
    threats: list[str] | None = None
    weakest_single: float | None = None
    metrics: WorstMetrics = nested(WorstMetrics, default=WorstMetrics)
    intervals: dict[str, Interval] | None = nested(dict_of(Interval), optional=True)


@dataclass
class CertifiedSamples(Record):
    """A certified cell's per-sample outcomes: smoothed prediction (-1: abstained) and L2 radius."""

    position: list[int] | None = None
    label: list[int] | None = None
    prediction: list[int] | None = None
    radius: list[float] | None = None
    certified: list[bool] | None = None


@dataclass
class CertifiedCell(Addressed, Record):
    """A certified cell (``certified[]``): certified accuracy of a smoothed target at one L2 radius.

    It addresses like a cell (``threat="certified"``, ``attack="certified"``; gates
    ``certified@0.25>=0.5``): ``metrics.robust_accuracy`` is the certified accuracy (correct and
    certified with radius ≥ ``eps``, abstentions wrong), ``metrics.clean_accuracy`` the smoothed
    classifier's accuracy, ``intervals`` exact (Clopper–Pearson) 95 % intervals.
    """

    id: str | None = None
    key: str | None = None
    target: str | None = None
    threat: str | None = None
    attack: str | None = None
    norm: str | None = None
    eps: float | None = None
    eps_label: str | None = None
    sigma: float | None = None
    n0: int | None = None
    n_draws: int | None = None
    alpha: float | None = None
    seed: int | None = None
    n_abstained: int | None = None
    metrics: CellMetrics = nested(CellMetrics, default=CellMetrics)
    intervals: dict[str, Interval] | None = nested(dict_of(Interval), optional=True)
    samples: CertifiedSamples = nested(CertifiedSamples, default=CertifiedSamples)
    seconds: float | None = None

    @property
    def only_class(self) -> int | None:
        """The one class the smoothed target predicts wherever it does not abstain, else ``None``.

        Set only when the labels hold several classes: a degenerate smoothed classifier.
        """
        from medrobust.defenses.certify import ABSTAIN

        predicted = {int(p) for p in self.samples.prediction if int(p) != ABSTAIN}
        if len(predicted) != 1 or len({int(v) for v in self.samples.label}) < 2:
            return None
        return predicted.pop()


# -- flags, gates, verdict ------------------------------------------------------------------------
@dataclass
class Flag(Record):
    """One raised sanity flag (``flags[]``; docs/flags.md#ID says what it means)."""

    id: str = ""
    severity: str = "warning"
    message: str = ""
    target: str | None = None
    threat: str | None = None
    attack: str | None = None
    eps_label: str | None = None
    doc: str = ""

    @property
    def where(self) -> list[str]:
        """The flag's target, threat, attack and budget (those it has)."""
        return [str(v) for v in (self.target, self.threat, self.attack, self.eps_label) if v]


@dataclass
class GateFailure(Record):
    """A cell a gate failed on: its key, the tested value and, when not the value, why."""

    cell: str = ""
    value: float | None = None
    reason: str | None = plain(optional=True)


@dataclass
class GateOutcome(Record):
    """A gate's outcome (``gates[]``)."""

    gate: str = ""
    metric: str = "robust_accuracy"
    bound: str = "value"
    passed: bool = False
    checked: list[str] = plain(default=list)
    failures: list[GateFailure] = nested(list_of(GateFailure), default=list)


@dataclass
class Headline(Record):
    """A verdict row: a target's overall worst case at one bounded budget."""

    target: str | None = None
    norm: str | None = None
    eps: float | None = None
    eps_label: str | None = None
    robust_accuracy: Interval | None = nested(Interval)
    clean_accuracy: Interval | None = nested(Interval)
    attacks: list[str] = plain(default=list)
    threats: list[str] = plain(default=list)


@dataclass
class BudgetStatement(Record):
    """A budget in the threat model, both ways: ``eps`` in image units, ``grey`` in k/255 of the range."""

    norm: str | None = None
    eps: float | None = None
    eps_label: str | None = None
    grey: str | None = None


@dataclass
class ThreatModel(Record):
    """Attacker knowledge per threat, goal, where the perturbation acts, budgets."""

    knowledge: dict[str, str] = plain(default=dict)
    goal: str = ""
    where: str = ""
    budgets: list[BudgetStatement] = nested(list_of(BudgetStatement), default=list)


@dataclass
class GateCounts(Record):
    """How many gates passed and failed."""

    total: int = 0
    passed: int = 0
    failed: int = 0


@dataclass
class FlagCounts(Record):
    """Flags per level."""

    error: int = 0
    warning: int = 0
    info: int = 0


@dataclass
class Verdict(Record):
    """``verdict``: pass / fail / no-gates, counts, headline rows and the threat model."""

    status: str = "no-gates"
    gates: GateCounts = nested(GateCounts, default=GateCounts)
    flags: FlagCounts = nested(FlagCounts, default=FlagCounts)
    headline: list[Headline] = nested(list_of(Headline), default=list)
    threat_model: ThreatModel = nested(ThreatModel, default=ThreatModel)
    #: Certified accuracy per target and radius (audits with the ``certified`` threat).
    certified: list[Headline] | None = nested(list_of(Headline), optional=True)


@dataclass
class Statistics(Record):
    """``statistics``: how the intervals were computed and what sample sizes buy."""

    confidence: float = 0.95
    proportions: str | None = None
    other: str | None = None
    n_boot: int | None = None
    clustered: bool = False
    n_clusters: int | None = None
    n: int | None = None
    half_width: float | None = plain(key="half_width_at_0.5")
    samples_needed: dict[str, int] = plain(default=dict)
    averaging: str | None = None
    descriptive: list[str] = plain(default=list)


# -- what was audited -----------------------------------------------------------------------------
@dataclass
class DataInfo(Record):
    """``data``: the audited samples (no patient data): split and why, labels, per-class counts."""

    source: str | None = None
    split: str | None = None
    split_requested: str | None = None
    split_reason: str | None = None
    split_origin: str | None = None
    n_records: int | None = None
    preset: str | None = None
    spatial_size: list[int] | None = None
    n_available: int | None = None
    n: int | None = None
    class_names: list[str] = plain(default=list)
    positive_class: str | None = None
    indices: list[int] | None = None
    ids: list[str] | None = None
    labels: list[int] = plain(default=list)
    class_counts: dict[str, int] | None = plain(optional=True)
    clusters: list[int] | None = plain(optional=True)
    n_patients: int | None = plain(optional=True)

    @property
    def positive_index(self) -> int | None:
        """Index of the card's positive class (``None``: class 1 of a binary task, macro otherwise)."""
        return (
            self.class_names.index(self.positive_class) if self.positive_class in self.class_names else None
        )


@dataclass
class ModelInfo(Record):
    """``model``: the audited model's path, card and how it was imported."""

    path: str | None = None
    card: dict[str, Any] = plain(default=dict)
    import_info: dict[str, Any] | None = plain(key="import", optional=True)

    @property
    def modality(self) -> str | None:
        """The card's modality."""
        return self.card.get("modality")


@dataclass
class TargetInfo(Record):
    """``targets[]``: the bare classifier or a defended pipeline, with its clean metrics."""

    name: str = ""
    kind: str | None = None
    uses_bpda: bool = False
    defense: dict[str, Any] | None = None
    denoiser: dict[str, Any] | None = None
    clean: CleanMetrics = nested(CleanMetrics, default=CleanMetrics)
    #: Randomised target (declared ``stochastic`` or two passes on the same batch differ).
    stochastic: bool | None = plain(optional=True)
    #: Useless-gradient check over every audited sample: ``n``, ``n_tiny``, ``n_nonfinite``, ``fraction``.
    gradient_check: dict[str, Any] | None = plain(optional=True)


@dataclass
class AttackInfo(Record):
    """``attacks[]``: an attack as configured."""

    label: str = ""
    name: str = ""
    norm: str | None = None
    minimal: bool = False
    params: dict[str, Any] = plain(default=dict)


@dataclass
class BudgetValues(Record):
    """``budgets``: the audit's budgets per norm in image units of the card's bounds."""

    linf: list[float] = plain(default=list)
    l2: list[float] = plain(default=list)


@dataclass
class FileEntry(Record):
    """A hashed input file: path, SHA-256 and size."""

    path: str | None = None
    sha256: str | None = None
    size: int | None = None


@dataclass
class ModelProvenance(Record):
    """Hashes of the model's weights and card."""

    weights: FileEntry | None = nested(FileEntry)
    card: FileEntry | None = nested(FileEntry)


@dataclass
class DataProvenance(Record):
    """Hash of the audited data: a manifest of its files, or a phantom spec."""

    kind: str | None = None
    path: str | None = None
    sha256: str | None = None
    size: int | None = None
    n_files: int | None = None
    phantom: dict[str, Any] | None = None
    files: list[dict[str, Any]] = plain(default=list)


def _defense_provenance(values: Mapping[str, Any]) -> dict[str, dict[str, FileEntry | None]]:
    return {name: dict_of(FileEntry)(parts or {}) for name, parts in values.items()}


@dataclass
class Provenance(Record):
    """``provenance``: the run fingerprint and the content hashes of every input."""

    run_fingerprint: str | None = None
    model: ModelProvenance = nested(ModelProvenance, default=ModelProvenance)
    defenses: dict[str, dict[str, FileEntry | None]] = nested(_defense_provenance, default=dict)
    data: DataProvenance = nested(DataProvenance, default=DataProvenance)


@dataclass
class AuditDocument(Record):
    """results.json (schema ``medrobust.audit/1``).

    ``statistics``, ``worst_cases`` and ``verdict`` are added when the audit completes (an
    older file may lack them: :func:`medrobust.evaluation.verdict.ensure_evidence`).
    """

    schema: str = SCHEMA
    medrobust_version: str = ""
    name: str = "audit"
    fingerprint: str = ""
    provenance: Provenance | None = nested(Provenance, optional=True)
    seed: int = 0
    config: dict[str, Any] = plain(default=dict)
    data: DataInfo = nested(DataInfo, default=DataInfo)
    model: ModelInfo = nested(ModelInfo, default=ModelInfo)
    bounds: list[float] = plain(default=lambda: [0.0, 1.0])
    targets: list[TargetInfo] = nested(list_of(TargetInfo), default=list)
    threats: list[str] = plain(default=list)
    attacks: list[AttackInfo] = nested(list_of(AttackInfo), default=list)
    budgets: BudgetValues = nested(BudgetValues, default=BudgetValues)
    cells: list[Cell] = nested(list_of(Cell), default=list)
    flags: list[Flag] = nested(list_of(Flag), default=list)
    gates: list[GateOutcome] = nested(list_of(GateOutcome), default=list)
    notes: list[str] = plain(default=list)
    statistics: Statistics | None = nested(Statistics, optional=True)
    worst_cases: list[WorstCase] | None = nested(list_of(WorstCase), optional=True)
    verdict: Verdict | None = nested(Verdict, optional=True)
    certified: list[CertifiedCell] | None = nested(list_of(CertifiedCell), optional=True)

    @property
    def target_names(self) -> list[str]:
        """Target names in audit order (``bare`` first)."""
        return [t.name for t in self.targets]

    def target(self, name: str) -> TargetInfo | None:
        """The target called ``name``."""
        return next((t for t in self.targets if t.name == name), None)

    @property
    def bare(self) -> TargetInfo | None:
        """The undefended classifier's target."""
        return next((t for t in self.targets if t.kind == "classifier"), None)

    @property
    def checks(self) -> dict[str, Any]:
        """The config's ``checks`` thresholds (empty when absent)."""
        return dict((self.config or {}).get("checks") or {})


def as_document(results: AuditDocument | Mapping[str, Any]) -> AuditDocument:
    """``results`` as an :class:`AuditDocument` (a results dict is read; a document returned as is)."""
    return AuditDocument.from_dict(results)


def as_cells(
    cells: Iterable[Cell | WorstCase | CertifiedCell | Mapping[str, Any]],
) -> list[Cell | WorstCase | CertifiedCell]:
    """Cells (worst cases, certified cells) as records; plain dicts are read as :class:`Cell`."""
    return [c if isinstance(c, (Cell, WorstCase, CertifiedCell)) else Cell.from_dict(c) for c in cells]


def as_flags(flags: Iterable[Flag | Mapping[str, Any]]) -> list[Flag]:
    """Flags as :class:`Flag` records."""
    return [Flag.from_dict(f) for f in flags]

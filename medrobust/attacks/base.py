"""The attack contract: every attack is one small file implementing :meth:`Attack._attack`.

An attack works in image space inside explicit ``bounds`` (from the model card
unless given), never touches global RNG state (an explicit ``torch.Generator``),
never leaves the model in training mode, and returns an :class:`AttackResult`
with per-sample information so the audit can report honest numbers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._eot import attack_randomness, is_stochastic
from medrobust.attacks._layout import conv_weights_channels_last, use_channels_last
from medrobust.attacks.perturbation import Perturbation
from medrobust.errors import ConfigError
from medrobust.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack")


#: ``@register_attack("name", *aliases)``: registers the class and sets its ``name``.
register_attack = ATTACKS.decorator("name")


class Deferred:
    """A result field holding a stored tensor, or a computation made on its first read.

    ``Deferred.defer(obj, "name", fn)`` leaves ``obj.name`` pending until someone reads it;
    the first read runs ``fn()`` once and stores the value; assigning stores a value directly.
    :meth:`Attack.__call__` defers ``AttackResult.success`` (one forward of the model as given
    on ``adv``): the audit evaluates every target on the adversarial images itself and never
    reads it, so there it costs nothing. Segmentation results defer their clean label maps the
    same way.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @staticmethod
    def defer(obj: Any, name: str, fn: Callable[[], Any]) -> None:
        """Let ``fn()`` (run once, on the first read of ``obj.name``) provide its value."""
        obj.__dict__[f"_{name}_fn"] = fn

    @staticmethod
    def pending(obj: Any, name: str) -> bool:
        """True while ``obj.name`` waits for its first read."""
        return f"_{name}_fn" in obj.__dict__

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:  # class access: a required dataclass field, no default
            raise AttributeError(self.name)
        fn = obj.__dict__.pop(f"_{self.name}_fn", None)
        if fn is not None:
            obj.__dict__[f"_{self.name}"] = fn()
        return obj.__dict__[f"_{self.name}"]

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__.pop(f"_{self.name}_fn", None)
        obj.__dict__[f"_{self.name}"] = value


@dataclass
class AttackResult:
    """What an attack returns.

    Attributes:
        adv: Adversarial images, same shape/dtype/device as the input, inside the bounds.
        success: Bool per sample: the prediction of the model as given on ``adv`` differs
            from the label (decided by one forward of the model as given, in eval mode, when
            ``success`` is first read after :meth:`Attack.__call__`; targeted attacks such as
            APGD-T count any misclassification, as AutoAttack does). Read it before changing
            the model: a later read raises :class:`~medrobust.errors.ConfigError`.
        linf: Per-sample L∞ norm of ``adv - images``.
        l2: Per-sample L2 norm of ``adv - images``.
        queries: Per-sample count of model forward evaluations (or iterations; see ``info``).
        info: Free-form notes recorded in results (e.g. "DLR replaced by margin loss, K<4").
    """

    adv: torch.Tensor
    success: Deferred = Deferred()  # type: ignore[assignment]  # a torch.Tensor when read
    linf: torch.Tensor
    l2: torch.Tensor
    queries: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        """False while ``success`` waits for its first read (the forward not yet run)."""
        return not Deferred.pending(self, "success")

    def __getstate__(self) -> dict[str, Any]:
        """Pickling (e.g. a gather across ranks) decides ``success`` first: the decision needs the model."""
        self.success  # noqa: B018
        return dict(self.__dict__)

    def defer_success(self, decide: Callable[[], torch.Tensor]) -> None:
        """Let ``decide()`` (run once, on the first read of ``success``) replace ``success``."""
        Deferred.defer(self, "success", decide)


def while_unchanged(model: nn.Module, fn: Callable[[], Any], what: str, how: str) -> Callable[[], Any]:
    """``fn`` for a later, deferred read of ``what``, refusing a model changed since this call.

    Args:
        model: The model ``fn`` queries; its parameters' and buffers' identity is recorded now.
        fn: The computation (one forward of ``model``).
        what: The owner and field, e.g. ``"PGD: AttackResult.success"``.
        how: What the computation is, for the error message.

    Raises (when the returned callable runs):
        ConfigError: when ``model``'s parameters or buffers changed in between.
    """
    from medrobust.attacks._fuse import model_state, same_state

    state = model_state(model)

    def run() -> Any:
        if state is not None and not same_state(state, model_state(model)):
            raise ConfigError(
                f"{what} must be read before the model changes ({how}). Got a model whose parameters "
                "or buffers changed after the attack."
            )
        return fn()

    return run


def perturbation_norms(adv: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (L∞, L2) norms of ``adv - images``."""
    delta = (adv - images).detach().flatten(1).float()
    return delta.abs().amax(dim=1), delta.norm(p=2, dim=1)


def plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """Strip MONAI ``MetaTensor`` (about 10 % slower in attack loops) to a plain tensor."""
    as_tensor = getattr(x, "as_tensor", None)
    return as_tensor() if callable(as_tensor) else x


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore each submodule's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


class Attack(Perturbation, ABC):
    """Base class of all classifier attacks.

    Subclasses set ``norm`` ("linf", "l2" or None for minimal-norm attacks; a bounded
    attack stores its budget in ``self.eps``), validate
    their own parameters in ``__init__`` (calling ``super().__init__`` first) and implement
    :meth:`_attack`, querying :attr:`net` (or :meth:`query`) inside it. Call the attack like
    a function: ``result = attack(images, labels)``.

    **BatchNorm folding.** When the model is given in eval mode, the attack queries a copy
    with every BatchNorm folded into the convolution before it (:mod:`medrobust.attacks._fuse`:
    traced with ``torch.fx``, checked to give the model's logits within 1e-4 relative,
    cached per model state; the model as given is used when tracing or the check fails).
    ``result.info["query_model"]`` says which. Models in training mode (adversarial
    training) are queried as given. ``fuse_bn=False, channels_last=False`` is the parity
    mode: the model as given, in its own memory layout, which is what reproduces
    torchattacks bit for bit where an attack claims it.

    **Success** is always decided on the model as given: one forward of it on the returned
    images (in their returned, contiguous layout, eval mode) decides ``result.success``,
    whatever the attack computed while attacking. That forward runs when ``success`` is first
    read (the audit, which evaluates every target on the adversarial images itself, never
    reads it, and benchmarks/attacks.py times it separately); ensembles whose records follow
    the decision (those overriding :meth:`_confirmed`, e.g. AutoAttack) decide at once.

    Args:
        model: A classifier returning logits for inputs in image space.
        bounds: Intensity interval ``(low, high)``; defaults to ``model.card.bounds``.
        seed: Seed of the attack's private generator (recorded in results).
        fuse_bn: Query a conv-BN folded copy of a model given in eval mode (default True).
    """

    name: ClassVar[str] = "attack"
    #: Minimal-perturbation attack (stops on the decision boundary; no budget).
    minimal: ClassVar[bool] = False

    def __init__(
        self, model: nn.Module, *, bounds: Any = None, seed: int = 0, fuse_bn: bool = True, **unused: Any
    ) -> None:
        super().__init__(model, bounds=bounds, seed=seed, **unused)
        self.model = model
        if not isinstance(fuse_bn, bool):
            raise ConfigError(
                f"The 'fuse_bn' parameter of {type(self).__name__} must be a bool. Got {fuse_bn!r}."
            )
        self.fuse_bn = fuse_bn
        self._net: nn.Module | None = None

    @property
    def net(self) -> nn.Module:
        """The module queried while attacking: the folded copy during a call, else :attr:`model`."""
        return self.model if self._net is None else self._net

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (float32) of :attr:`net`, the module the attack queries."""
        return self.net(x).float()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (float32) of the model as given (never the folded copy)."""
        return self.model(x).float()

    @contextmanager
    def querying(self, net: nn.Module) -> Iterator[nn.Module]:
        """Make :attr:`net` return ``net`` for the block (ensembles hand theirs to components)."""
        saved = self._net
        self._net = net
        try:
            yield net
        finally:
            self._net = saved

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> AttackResult:
        """Attack ``images`` with true ``labels``; returns an :class:`AttackResult`."""
        images = plain_tensor(images).detach()
        labels = plain_tensor(labels).detach().long().view(-1)
        if images.ndim < 3 or images.shape[0] != labels.shape[0]:
            raise ConfigError(
                f"{type(self).__name__} expects images (N, C, ...) and labels (N,). "
                f"Got images {tuple(images.shape)} and labels {tuple(labels.shape)}."
            )
        low, high = self.bounds
        if images.numel():
            lo, hi = (float(v) for v in torch.aminmax(images))  # one pass over the images
            if not (lo >= low - 1e-6 and hi <= high + 1e-6):
                raise ConfigError(
                    f"{type(self).__name__}: images must lie inside bounds [{low:g}, {high:g}]. "
                    f"Got values in [{lo:g}, {hi:g}]."
                )
        given_in_eval = not any(m.training for m in self.model.modules())
        with eval_mode(self.model):
            cl = self._feeds_channels_last(images)
            net, desc = self._query_net(images, cl, given_in_eval)
            generator = self.generator(images.device)
            with (
                self.querying(net),
                conv_weights_channels_last(self.model, cl and net is self.model),
                attack_randomness(generator, net, self.model),  # a randomised target draws from the seed
            ):
                out = self._attack(images, labels, generator)
            if isinstance(out, AttackResult):
                result = out
            else:
                adv = out.detach().clamp(low, high).to(images.dtype).contiguous()
                linf, l2 = perturbation_norms(adv, images)
                result = AttackResult(
                    adv=adv,
                    success=torch.zeros_like(labels, dtype=torch.bool),
                    linf=linf,
                    l2=l2,
                    queries=torch.full_like(labels, getattr(self, "steps", 1)),
                )
            result.info.setdefault("query_model", desc)
        # One forward of the model as given on the returned images decides success: the
        # folded copy and the memory layout used while attacking may flip an argmax on the
        # decision boundary (minimal attacks stop right there; seen with HU bounds).
        if type(self)._confirmed is Attack._confirmed:
            result.defer_success(self._decision(result.adv, labels))  # the audit never reads it
        else:  # an ensemble whose records follow the decision: decide now
            self._confirmed(result, self._decide(result.adv, labels))
        return result

    def _decide(self, adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Success on ``adv``: one forward of the model as given, in eval mode, no gradients."""
        with eval_mode(self.model), torch.no_grad():
            return self.logits(adv).argmax(dim=1) != labels

    def _decision(self, adv: torch.Tensor, labels: torch.Tensor) -> Callable[[], torch.Tensor]:
        """:meth:`_decide` for later, refusing a model whose parameters or buffers changed since."""
        return while_unchanged(
            self.model,
            lambda: self._decide(adv, labels),
            f"{type(self).__name__}: AttackResult.success",
            "it is decided by one forward of the model as given",
        )

    def _query_net(self, images: torch.Tensor, cl: bool, given_in_eval: bool) -> tuple[nn.Module, str]:
        """The module to query for this call, and a description for ``info``."""
        if not self.fuse_bn:
            return self.model, "model as given (fuse_bn=False)"
        if not given_in_eval:
            return self.model, "model as given (in training mode)"
        if images.shape[0] == 0:
            return self.model, "model as given (empty batch)"
        if is_stochastic(self.model):  # two forwards differ: the folding check cannot compare them
            return self.model, "model as given (randomised)"
        from medrobust.attacks._fuse import folded_model

        sample = images[:8]
        if cl:
            sample = sample.contiguous(memory_format=torch.channels_last)
        return folded_model(self.model, sample, cl)

    def _confirmed(self, result: AttackResult, success: torch.Tensor) -> None:
        """Store the success decided on the model as given (ensembles also fix their records)."""
        result.success = success

    def _feeds_channels_last(self, images: torch.Tensor) -> bool:
        """True when this attack will pass ``channels_last`` inputs to a conv net.

        Attacks opt in with a ``channels_last`` attribute (``None`` = automatic). The
        conv weights are then stored in ``channels_last`` for the call too (the folded copy
        keeps them so): a layout mismatch costs a re-layout per convolution (PGD on a
        1-channel ``small_cnn`` ran 1.9x faster with matching weights).
        """
        return hasattr(self, "channels_last") and use_channels_last(self.model, images, self.channels_last)

    @abstractmethod
    def _attack(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor | AttackResult:
        """Return adversarial images (or a full :class:`AttackResult`).

        Query :attr:`net` / :meth:`query`. The ``success`` of a returned result is the
        attack's own view (used by ensembles between stages); :meth:`__call__` replaces it
        with the model-as-given decision on the returned images.
        """


def create_attack(name: str, model: nn.Module, **params: Any) -> Attack:
    """Build a registered attack by name: ``create_attack("pgd", model, eps=2/255)``."""
    return ATTACKS.get(name)(model, **params)


def list_attacks() -> list[str]:
    """Names of all registered attacks."""
    return ATTACKS.names()

"""AutoAttack (Croce & Hein, ICML 2020) at the original strength, for any K >= 2."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._budget import BudgetAttack
from medrobust.attacks._eot import MAX_EOT_ITER, is_stochastic
from medrobust.attacks._utils import make_result
from medrobust.attacks.apgd_ce import APGDCE
from medrobust.attacks.apgd_dlr import APGDDLR
from medrobust.attacks.apgd_t import APGDT
from medrobust.attacks.base import Attack, AttackResult, register_attack
from medrobust.attacks.fab import FAB
from medrobust.attacks.square import Square
from medrobust.errors import ConfigError
from medrobust.limits import MAX_ATTACK_QUERIES, MAX_ATTACK_STEPS, MAX_CLASSES
from medrobust.utils.logging import get_logger
from medrobust.validation import check_choice, check_int

log = get_logger("attacks.autoattack")

#: Sub-attack settings per version: (label, class, params). ``standard`` is the original's.
VERSIONS: dict[str, list[tuple[str, type[Attack], dict[str, Any]]]] = {
    "standard": [
        ("apgd-ce", APGDCE, {"steps": 100, "restarts": 1}),
        ("apgd-t", APGDT, {"steps": 100, "restarts": 1, "n_target_classes": 9}),
        ("fab-t", FAB, {"steps": 100, "restarts": 1, "n_target_classes": 9}),
        ("square", Square, {"queries": 5000, "p_init": 0.8, "restarts": 1}),
    ],
    "fast": [
        ("apgd-ce", APGDCE, {"steps": 50, "restarts": 1}),
        ("apgd-t", APGDT, {"steps": 50, "restarts": 1, "n_target_classes": 3}),
    ],
    # The original's version for randomised defenses: APGD-CE and APGD-DLR with EOT over 20 draws.
    "rand": [
        ("apgd-ce", APGDCE, {"steps": 100, "restarts": 1, "eot_iter": 20}),
        ("apgd-dlr", APGDDLR, {"steps": 100, "restarts": 1, "eot_iter": 20}),
    ],
}


@register_attack("autoattack")
class AutoAttack(BudgetAttack):
    """AutoAttack: an ensemble of parameter-free attacks, each run on the points still robust.

    ``version="standard"`` is the original protocol (L∞ and L2): APGD-CE (100 iterations,
    no restarts) → APGD-T (targeted DLR, ``min(9, K-1)`` targets × 100 iterations) →
    FAB-T (``min(9, K-1)`` targets × 100 iterations) → Square (5000 queries, ``p_init``
    0.8). For ``K < 4`` APGD-T uses the targeted margin loss (DLR needs four logits) and
    ``info["notes"]`` says so. ``version="fast"`` is a cheaper screen, **not** a
    replacement for ``standard``: APGD-CE (50 iterations) → APGD-T (``min(3, K-1)``
    targets × 50 iterations), no FAB-T and no Square. ``version="rand"`` is the original's
    protocol for randomised defenses (noise injection, random resize-and-pad: any module
    declaring ``stochastic = True``): APGD-CE → APGD-DLR (untargeted; margin loss for K = 2),
    100 iterations each, every gradient, loss and logit averaged over ``eot_iter`` = 20 draws of
    the model's randomness (EOT). A randomised target attacked with another version is logged
    as a warning and noted in ``info["notes"]``: single-draw gradients underestimate the attack.

    All sub-attacks use this attack's bounds and ``seed`` (each starts from a fresh
    generator with that seed, as the original reseeds each one). ``info`` records which
    sub-attack fooled each sample (``fooled_by``, counts in ``fooled_per_attack``), the
    robust accuracy after each stage and any loss substitutions; ``queries`` adds up
    every forward pass of every sub-attack.

    Args:
        version: "standard" or "fast".
        steps: Override the iterations of APGD-CE, APGD-T and FAB-T (None: per version).
        queries: Override Square's query budget (None: per version).
        n_target_classes: Override the number of targets of APGD-T and FAB-T.
        eot_iter: Override the EOT draws of the ``rand`` version's stages (default 20).
        eps, norm, channels_last, bounds, seed: See :class:`BudgetAttack`.
    """

    fast_params: ClassVar[dict[str, Any]] = {"version": "fast", "steps": 3, "n_target_classes": 2}

    def __init__(
        self,
        model: nn.Module,
        *,
        version: str = "standard",
        steps: int | None = None,
        queries: int | None = None,
        n_target_classes: int | None = None,
        eot_iter: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        owner = type(self).__name__
        self.version = check_choice(version, "version", tuple(VERSIONS), owner)
        self.steps = None if steps is None else check_int(steps, "steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.queries = (
            None if queries is None else check_int(queries, "queries", owner, low=1, high=MAX_ATTACK_QUERIES)
        )
        self.n_target_classes = (
            None
            if n_target_classes is None
            else check_int(n_target_classes, "n_target_classes", owner, low=1, high=MAX_CLASSES)
        )
        self.eot_iter = (
            None if eot_iter is None else check_int(eot_iter, "eot_iter", owner, low=1, high=MAX_EOT_ITER)
        )
        if self.eot_iter is not None and self.version != "rand":
            raise ConfigError(
                f"The 'eot_iter' parameter of {owner} applies to version='rand' only. "
                f"Got eot_iter={eot_iter!r} with version={self.version!r}."
            )
        self.components = [
            (label, cls(model, **self._sub_params(cls, params)))
            for label, cls, params in VERSIONS[self.version]
        ]
        #: Averages over the target's randomness (read by the audit's EOT flag).
        self.uses_eot = self.version == "rand"

    def _sub_params(self, cls: type[Attack], params: dict[str, Any]) -> dict[str, Any]:
        out = dict(params)
        if self.steps is not None and "steps" in out:
            out["steps"] = self.steps
        if self.queries is not None and "queries" in out:
            out["queries"] = self.queries
        if self.n_target_classes is not None and "n_target_classes" in out:
            out["n_target_classes"] = self.n_target_classes
        if self.eot_iter is not None and "eot_iter" in out:
            out["eot_iter"] = self.eot_iter
        out.update(eps=self.eps, norm=self.norm, bounds=self.bounds, seed=self.seed)
        out["channels_last"] = self.channels_last
        out["fuse_bn"] = self.fuse_bn
        return out

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> AttackResult:
        n = labels.shape[0]
        with torch.no_grad():
            robust = self.query(images).argmax(dim=1) == labels
        queries = torch.ones_like(labels)
        adv = images.clone()
        fooled_by: list[str | None] = ["clean" if not r else None for r in robust.tolist()]
        per_attack: dict[str, int] = {}
        robust_after: dict[str, float] = {"clean": float(robust.float().mean()) if n else 0.0}
        notes: list[str] = []
        if self.version != "rand" and is_stochastic(self.model):
            note = (
                f"randomised target (a module declares stochastic=True) attacked with "
                f"version={self.version!r}, without EOT: robust accuracy is likely overestimated; "
                "use version='rand' or eot-pgd"
            )
            log.warning("AutoAttack: %s", note)
            notes.append(note)
        settings: dict[str, dict[str, Any]] = {}
        for label, atk in self.components:
            settings[label] = {
                k: v for k, v in atk.params().items() if k not in ("bounds", "seed", "eps", "norm")
            }
            todo = robust.nonzero().squeeze(1)
            if todo.numel() == 0:
                per_attack[label] = 0
                robust_after[label] = robust_after[list(robust_after)[-1]]
                continue
            with atk.querying(self.net):  # this call's folded copy, shared by every stage
                res = atk._attack(images[todo], labels[todo], atk.generator(images.device))
            queries[todo] += res.queries
            won = res.success
            adv[todo[won]] = res.adv[won]
            robust[todo[won]] = False
            for i in todo[won].tolist():
                fooled_by[i] = label
            per_attack[label] = int(won.sum())
            robust_after[label] = float(robust.float().mean())
            notes += [f"{label}: {note}" for note in res.info.get("notes", [])]
        success = ~robust  # our view; __call__ decides on the model as given
        queries += 1
        info: dict[str, Any] = {
            "version": self.version,
            "fooled_by": fooled_by,
            "fooled_per_attack": per_attack,
            "robust_accuracy_after": robust_after,
            "settings": settings,
        }
        if notes:
            info["notes"] = notes
        return make_result(adv, images, success, queries, info)

    def _confirmed(self, result: AttackResult, success: torch.Tensor) -> None:
        """Keep ``fooled_by`` consistent with the success decided on the model as given.

        The stages see the queried copy; where it and the model as given disagree on a point
        (on the decision boundary), the record follows the model as given: a point not fooled
        loses its stage, and a point returned unchanged but misclassified is ``"clean"``.
        """
        result.success = success
        fooled_by = result.info["fooled_by"]
        per_attack = result.info["fooled_per_attack"]
        for i, (by, ok) in enumerate(zip(fooled_by, success.tolist(), strict=True)):
            if by is not None and not ok:
                if by != "clean":
                    per_attack[by] -= 1
                fooled_by[i] = None
            elif by is None and ok:
                fooled_by[i] = "clean"

"""Certified cells: certified accuracy of every target under randomized smoothing, per L2 radius.

With ``threats: [..., certified]`` and a ``certify`` block, each target is smoothed with
Gaussian noise of ``certify.sigma`` (:func:`medrobust.defenses.smoothing.smooth`): the bare
classifier is plain randomized smoothing (Cohen et al. 2019), a defended target puts its
denoiser after the noise (denoised smoothing, Salman et al. 2020). CERTIFY with ``n0``
selection and ``n`` estimation draws at level ``alpha`` gives every audited sample a smoothed
prediction (or an abstention) and a certified L2 radius; the cell at radius ``r`` (one per
``budgets.l2`` value, in image units of the card's bounds) holds the share of samples predicted
correctly *and* certified at radius ≥ ``r``, with its exact (Clopper–Pearson) 95 % interval
(:func:`medrobust.defenses.certify.certified_accuracy`).

Sampling is the cost (``n0 + n`` forward passes of the denoiser and the classifier per image):
while a target is certified, its 2-D convolution weights are kept in ``channels_last`` (the same
values; 1.7x less CPU time for the demo's DAE → small_cnn at 64×64, as for the attacks,
:func:`medrobust.attacks._layout.conv_weights_channels_last`).

Batch ``b`` of target ``t`` is certified with seed ``derive_seed(seed, f"certify|{t}|batch{b}")``
(so sharded and resumed runs agree); per-target certificates are kept under
``RUN/state/certify/`` keyed by everything they depend on and reused by a resumed run.

A certificate is a statement about the smoothed classifier ``g``, not about the target as
attacked in the other cells: certified cells are reported beside the empirical ones and never
enter a per-sample worst case.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust.attacks._layout import conv_weights_channels_last, has_conv2d
from medrobust.evaluation.config import BARE, AuditConfig
from medrobust.evaluation.planning import CellSpec
from medrobust.evaluation.results import CellMetrics, CertifiedCell, CertifiedSamples, Interval
from medrobust.run.seeds import derive_seed
from medrobust.utils.hashing import sha256_json
from medrobust.utils.io import atomic_write_json
from medrobust.utils.logging import get_logger

log = get_logger("evaluation.certified")


def smoothed_target(
    config: AuditConfig, name: str, targets: dict[str, nn.Module], seed: int = 0
) -> nn.Module:
    """The smoothed classifier of target ``name``.

    The bare classifier behind ``certify.sigma`` noise, and the target's denoiser for a defended target.
    """
    from medrobust.defenses.smoothing import smooth

    assert config.certify is not None
    classifier = targets[BARE]
    denoiser = None if name == BARE else getattr(targets[name], "denoiser", None)
    return smooth(classifier, config.certify.sigma, denoiser, seed=seed, batch_size=config.certify.batch_size)


def certify_batch(
    config: AuditConfig,
    name: str,
    model: nn.Module,
    images: torch.Tensor,
    batch_index: int,
    device: torch.device,
) -> tuple[list[int], list[float]]:
    """Smoothed predictions (-1: abstained) and certified radii of one batch of target ``name``."""
    assert config.certify is not None
    spec = config.certify
    seed = derive_seed(config.seed, f"certify|{name}|batch{batch_index}")
    certs = model.certify(images.to(device), n0=spec.n0, n=spec.n, alpha=spec.alpha, seed=seed)  # type: ignore[operator]
    return [int(c.prediction) for c in certs], [float(c.radius) for c in certs]


def certificate_key(run_fp: str, config: AuditConfig, name: str) -> str:
    """Hash of what a target's certificates depend on (run, target, the ``certify`` block)."""
    assert config.certify is not None
    return sha256_json({"run": run_fp, "target": name, "certify": config.certify.model_dump(mode="json")})


def cache_path(out: Path, name: str, key: str) -> Path:
    """Where a target's certificates are kept (``RUN/state/certify/<target>-<hash>.json``)."""
    from medrobust.evaluation.planning import safe_id

    return out / "state" / "certify" / f"{safe_id(name)}-{key[:16]}.json"


def load_cached(path: Path, n: int) -> dict[str, Any] | None:
    """Stored certificates of ``n`` samples, or ``None`` (absent or unreadable: recomputed)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable certificates (%s); recomputing them", path, type(exc).__name__)
        return None
    if len(data.get("prediction", [])) != n or len(data.get("radius", [])) != n:
        return None
    return data


def save_cached(path: Path, prediction: list[int], radius: list[float], seconds: float) -> None:
    """Store a target's certificates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"prediction": prediction, "radius": radius, "seconds": seconds})


def certified_records(
    config: AuditConfig,
    cells: list[CellSpec],
    labels: np.ndarray,
    certificates: dict[str, dict[str, Any]],
) -> list[CertifiedCell]:
    """The certified cells from each target's certificates (``{target: {prediction, radius, seconds}}``)."""
    from medrobust.defenses.certify import ABSTAIN, certified_accuracy

    assert config.certify is not None
    spec = config.certify
    out = []
    y = [int(v) for v in labels]
    n = len(y)
    for cell in cells:
        cert = certificates[cell.target]
        pred, radii = list(cert["prediction"]), list(cert["radius"])
        eps = float(cell.eps)  # type: ignore[arg-type]
        row, clean = certified_accuracy(pred, radii, y, [eps, 0.0])
        certified = [p != ABSTAIN and p == t and r >= eps for p, r, t in zip(pred, radii, y, strict=True)]

        def interval(r: dict[str, Any]) -> Interval:
            return Interval(
                value=r["accuracy"], ci=[r["ci_low"], r["ci_high"]], method="clopper-pearson", n=n
            )

        sigma = smoothed_sigma(config, cert)
        out.append(
            CertifiedCell(
                id=cell.id,
                key=cell.key,
                target=cell.target,
                threat=cell.threat,
                attack=cell.attack,
                norm="l2",
                eps=eps,
                eps_label=cell.eps_label,
                sigma=sigma,
                n0=spec.n0,
                n_draws=spec.n,
                alpha=spec.alpha,
                seed=config.seed,
                n_abstained=int(row["abstained"]),
                metrics=CellMetrics(
                    n=n,
                    n_clean_correct=int(clean["certified"]),
                    robust_accuracy=row["accuracy"],
                    clean_accuracy=clean["accuracy"],
                ),
                intervals={"robust_accuracy": interval(row), "clean_accuracy": interval(clean)},
                samples=CertifiedSamples(
                    position=list(range(n)), label=y, prediction=pred, radius=radii, certified=certified
                ),
                seconds=float(cert.get("seconds", 0.0)),
            )
        )
    return out


def smoothed_sigma(config: AuditConfig, cert: dict[str, Any]) -> float | None:
    """σ in image units, as recorded with the certificates."""
    value = cert.get("sigma")
    return None if value is None else float(value)


def run_certify(
    config: AuditConfig,
    cells: list[CellSpec],
    targets: dict[str, nn.Module],
    samples: Any,
    ctx: Any,
    device: torch.device,
    out: Path,
    run_fp: str,
) -> dict[str, dict[str, Any]] | None:
    """Certify every audited sample of each target with certified cells (this rank's batches).

    Returns:
        On rank 0, ``{target: {"prediction", "radius", "seconds", "sigma"}}`` over all samples;
        ``None`` on the other ranks.
    """
    names = list(dict.fromkeys(c.target for c in cells))
    n = len(samples)
    result: dict[str, dict[str, Any]] = {}
    for name in names:
        key = certificate_key(run_fp, config, name)
        path = cache_path(out, name, key)
        cached = ctx.broadcast(load_cached(path, n) if ctx.is_main else None)
        model = smoothed_target(config, name, targets)
        if cached is not None:
            result[name] = {**cached, "sigma": model.sigma}
            continue
        t0 = time.perf_counter()
        local = []
        with conv_weights_channels_last(model, enabled=has_conv2d(model)):
            for batch in samples.batches(ctx.owned(samples.n_batches)):
                local.append(
                    (batch.positions, *certify_batch(config, name, model, batch.images, batch.index, device))
                )
        parts = ctx.gather(local)
        if not ctx.is_main:
            continue
        pred = [0] * n
        radius = [0.0] * n
        for part in parts:
            for positions, p, r in part:
                for i, q in enumerate(positions):
                    pred[int(q)], radius[int(q)] = p[i], r[i]
        seconds = time.perf_counter() - t0
        save_cached(path, pred, radius, seconds)
        result[name] = {"prediction": pred, "radius": radius, "seconds": seconds, "sigma": model.sigma}
    return result if ctx.is_main else None

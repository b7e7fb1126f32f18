"""The denoiser robustness and similitude study (``medrobust denoisers study``).

Flow: config → clean test images ``x`` and noisy ``y = x + n`` (seeded) → zoo (deep
members trained or loaded, classical ones built, hybrids composed) → white-box
denoising attacks per member (plus a random baseline of the same norm) → transfer of
every member's adversarial inputs to every other member → ``results.json`` →
reports.

Resume: the kernel's state scheme (:class:`~medrobust.run.state.RunState`): every finished
unit (trained model, white-box attack, transfer pair) is saved under ``OUT/state`` as soon
as it completes (atomic writes, JSON written last). A rerun skips finished units;
``results.json`` is rebuilt from the units and is identical. A different config, or other
test images, are refused unless ``fresh=True`` (``--fresh``), which deletes the state.
Timings go to ``timings.json``, never into ``results.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.denoising.config import DenoiserStudyConfig, MemberSpec
from medrobust.denoising.data import load_clean_images
from medrobust.denoising.metrics import denoise, normality, perturbation_stats, quality, summarize
from medrobust.errors import ConfigError
from medrobust.run.environment import environment
from medrobust.run.seeds import derive_seed
from medrobust.run.state import RunState
from medrobust.utils.hashing import sha256_json
from medrobust.utils.io import atomic_path, atomic_write_json, atomic_write_text, finite_or_none
from medrobust.validation import budget_to_image_units

log = logging.getLogger("medrobust.denoising.study")

SCHEMA = "medrobust.denoiser_study"
SCHEMA_VERSION = 1
OUTPUTS = (
    "results.json",
    "report.html",
    "report.md",
    "config.resolved.yaml",
    "environment.json",
    "timings.json",
)


@dataclass
class Member:
    """A denoiser of the study with what the report needs to know about it."""

    name: str
    arch: str
    kind: str
    denoiser: Any
    noise_model: str
    training: dict[str, Any] | None = None
    parts: dict[str, str] = field(default_factory=dict)
    attack_steps: int | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-safe description (results.json ``models`` entry)."""
        return {
            "arch": self.arch,
            "kind": self.kind,
            "noise_model": self.noise_model,
            "differentiable": bool(getattr(self.denoiser, "differentiable", True)),
            "params": finite_or_none(self.denoiser.config()),
            "training": self.training,
            **({"parts": self.parts} if self.parts else {}),
        }


def member_seed(seed: int, name: str) -> int:
    """Per-member seed: distinct random starts per member, stable across runs (the kernel's derivation)."""
    return derive_seed(seed, "member", name)


def fingerprint(config: DenoiserStudyConfig) -> str:
    """SHA-256 of the resolved config (what decides whether state can be reused)."""
    return sha256_json(config.model_dump(mode="json"))


def _tensor_sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class StudyState(RunState):
    """The study's resumable state: the kernel's :class:`~medrobust.run.state.RunState`.

    Units are ``model/<name>``, ``whitebox/<norm>/<name>`` (JSON + safetensors of the
    adversarial inputs) and ``transfer/<norm>/<source>__<target>``; its inputs are the hashes
    of the test images.
    """

    schema = "medrobust.study-state/1"
    what = "denoiser study"
    unit_fields = ("unit",)

    def model_dir(self, name: str) -> Path:
        """Run folder of a trained member."""
        return self.dir / "models" / name

    def tensors(self, unit_id: str) -> Path:
        """The safetensors file kept beside a unit."""
        return self.units_dir / f"{unit_id}.safetensors"

    def describe_input_change(self, old: dict[str, Any], new: dict[str, Any]) -> str | None:
        """The test images changed (data, noise or library)."""
        if old != new:
            return "the clean or noisy test images differ from the ones this state was computed on"
        return None


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _noise_model(spec: MemberSpec, denoiser: Any) -> str:
    if spec.kind != "deep":
        return "classical"
    if getattr(denoiser, "accepts_noise_level", False):
        return "non-blind (noise-level map)"
    return "blind" if spec.train is not None and spec.train.blind else "non-blind"


def _build_members(
    config: DenoiserStudyConfig,
    images: Any,
    state: StudyState,
    device: torch.device,
    timings: dict,
    progress: bool,
) -> dict[str, Member]:
    from medrobust.defenses.checkpoint import load_denoiser
    from medrobust.defenses.denoisers import create_denoiser
    from medrobust.denoising.training import TrainDenoiserConfig, train_denoiser

    members: dict[str, Member] = {}
    bounds, channels = images.bounds, images.in_channels
    for spec in config.models:
        if spec.kind != "deep":
            den = create_denoiser(spec.arch, in_channels=channels, bounds=bounds, **spec.params)
            members[spec.name] = Member(
                spec.name, spec.arch, den.kind, den.eval(), "classical", attack_steps=spec.attack_steps
            )
            continue
        training: dict[str, Any]
        if spec.checkpoint is not None:
            den = load_denoiser(spec.checkpoint)
            if den.in_channels != channels or tuple(den.bounds) != tuple(bounds):
                raise ConfigError(
                    f"Member {spec.name!r}: checkpoint {spec.checkpoint} has in_channels={den.in_channels}, "
                    f"bounds={den.bounds}; the study data has in_channels={channels}, bounds={bounds}."
                )
            training = {"checkpoint": spec.checkpoint}
        else:
            run = state.model_dir(spec.name)
            unit_id = f"model/{spec.name}"
            tr = spec.train
            train_cfg = TrainDenoiserConfig(
                arch=spec.arch,
                params=spec.params,
                sigma=(tr.sigma if tr and tr.sigma is not None else config.sigma),
                blind=bool(tr and tr.blind),
                sigma_range=tr.sigma_range if tr else None,
                data=config.data,
                epochs=(tr.epochs if tr and tr.epochs else config.training.epochs),
                batch_size=(tr.batch_size if tr and tr.batch_size else config.training.batch_size),
                lr=(tr.lr if tr and tr.lr else config.training.lr),
                patch_size=(tr.patch_size if tr and tr.patch_size else config.training.patch_size),
                seed=member_seed(config.seed, spec.name),
                device=config.device,
                out=run,
                overwrite=True,  # a folder without unit.json is an interrupted unit
            )
            if not (state.has(unit_id) and run.is_dir()):
                t0 = time.perf_counter()
                train_denoiser(train_cfg, images=images, progress=progress)
                metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
                state.save(unit_id, {"unit": "model", "name": spec.name, "metrics": metrics})
                timings[f"train/{spec.name}"] = time.perf_counter() - t0
            metrics = state.load(unit_id)["metrics"]
            den = load_denoiser(run)
            training = {
                "blind": train_cfg.blind,
                "sigma": None if train_cfg.blind else train_cfg.sigma,
                "sigma_range": list(train_cfg.sigma_range) if train_cfg.blind else None,
                "epochs": train_cfg.epochs,
                "batch_size": train_cfg.batch_size,
                "lr": train_cfg.lr,
                "patch_size": train_cfg.patch_size,
                "seed": train_cfg.seed,
                "n_train": metrics.get("n_train"),
                "final_train_loss": metrics["train_loss"][-1],
                "val_psnr_denoised": metrics.get("val_psnr_denoised"),
            }
        members[spec.name] = Member(
            spec.name,
            spec.arch,
            "deep",
            den.eval(),
            _noise_model(spec, den),
            training,
            attack_steps=spec.attack_steps,
        )
    for h in config.hybrids:
        den = create_denoiser(
            "hybrid",
            in_channels=channels,
            bounds=bounds,
            classical=members[h.classical].denoiser,
            deep=members[h.deep].denoiser,
            mode=h.mode,
            alpha=h.alpha,
        )
        members[h.name] = Member(
            h.name,
            "hybrid",
            "hybrid",
            den.eval(),
            "hybrid",
            None,
            {"classical": h.classical, "deep": h.deep},
            attack_steps=h.attack_steps,
        )
    for m in members.values():
        m.denoiser.to(device)
    return members


def _attack_plan(
    member: Member, norm: str, config: DenoiserStudyConfig, n_values: int, bounds: tuple[float, float]
) -> tuple[str, dict]:
    a = config.attack
    steps = member.attack_steps or a.steps
    if norm == "l2":
        rms = budget_to_image_units(a.l2_rms, bounds, "l2_rms", "the study's attack")
        return "denoise-pgd-l2", {"eps": rms * math.sqrt(n_values), "steps": steps}
    differentiable = bool(getattr(member.denoiser, "differentiable", True))
    if member.kind == "classical" and not differentiable and a.classical == "spsa":
        return "denoise-spsa", {"eps": a.eps, "steps": steps, "samples": a.spsa_samples}
    params: dict[str, Any] = {"eps": a.eps, "steps": steps}
    if a.alpha is not None:
        params["alpha"] = a.alpha
    return "denoise-pgd", params


def _run_attack(name: str, den: Any, x: torch.Tensor, y: torch.Tensor, batch: int, seed: int, **params: Any):
    from medrobust.denoising.attacks import create_denoiser_attack

    advs, queries, method, info = [], [], "", {}
    for k, i in enumerate(range(0, x.shape[0], batch)):
        atk = create_denoiser_attack(name, den, seed=derive_seed(seed, "batch", k), **params)
        res = atk(x[i : i + batch], y[i : i + batch], score=False)
        advs.append(res.adv)
        queries.append(res.queries)
        method, info = res.method, res.info
    return torch.cat(advs), torch.cat(queries), method, info


def _whitebox_unit(
    member: Member, norm: str, config: DenoiserStudyConfig, x: torch.Tensor, y: torch.Tensor, ctx: dict
) -> tuple[dict[str, Any], torch.Tensor]:
    bounds, sigma_abs, scale = ctx["bounds"], ctx["sigma_abs"], ctx["scale"]
    seed = member_seed(config.seed, member.name)
    name, params = _attack_plan(member, norm, config, int(np.prod(x.shape[1:])), ctx["bounds"])
    if ctx["clip_range"] is not None:
        params["clip_range"] = ctx["clip_range"]
    bs = config.batch_size
    adv, queries, method, info = _run_attack(name, member.denoiser, x, y, bs, seed, **params)
    rparams = {"eps": params["eps"], "norm": norm}
    if "clip_range" in params:
        rparams["clip_range"] = params["clip_range"]
    rand, _, _, _ = _run_attack("random-noise", member.denoiser, x, y, bs, seed, **rparams)
    clean_out = ctx["clean_out"](member.name)
    q_adv = quality(member.denoiser, x, y, adv, bounds, bs, clean_out=clean_out)
    q_rand = quality(member.denoiser, x, y, rand, bounds, bs, clean_out=clean_out)
    record = {
        "unit": "whitebox",
        "member": member.name,
        "norm": norm,
        "attack": name,
        "method": method,
        "params": finite_or_none({k: v for k, v in params.items()}),
        "eps_abs": info.get("eps_abs"),
        "seed": seed,
        "queries": queries.tolist(),
        "per_image": q_adv,
        "random": {"attack": "random-noise", "params": finite_or_none(rparams), "per_image": q_rand},
        "perturbation": perturbation_stats(adv - y, scale),
        "normality": {
            "adversarial": normality(adv - x, sigma_abs, seed=seed),
            "random": normality(rand - x, sigma_abs, seed=seed),
            "clean_noise": normality(y - x, sigma_abs, seed=seed),
        },
    }
    return finite_or_none(record), adv


def _mean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()) if arr.size else math.nan


def _normality_summary(rows: list[dict]) -> dict[str, Any]:
    nt = np.array([r["normaltest_p"] if r["normaltest_p"] is not None else np.nan for r in rows], dtype=float)
    ks = np.array([r["ks_p"] if r["ks_p"] is not None else np.nan for r in rows], dtype=float)
    return {
        "normaltest_reject_rate": float(np.nanmean(nt < 0.05)) if nt.size else None,
        "normaltest_median_p": float(np.nanmedian(nt)) if nt.size else None,
        "ks_reject_rate": float(np.nanmean(ks < 0.05)) if ks.size else None,
        "ks_median_p": float(np.nanmedian(ks)) if ks.size else None,
        "residual_std": _mean([r["std"] for r in rows]),
    }


def _whitebox_summary(rec: dict) -> dict[str, Any]:
    q, r = rec["per_image"], rec["random"]["per_image"]
    return {
        "attack": rec["attack"],
        "method": rec["method"],
        "params": rec["params"],
        "eps_abs": rec["eps_abs"],
        "seed": rec["seed"],
        "mean_queries": _mean(rec["queries"]),
        **{
            k: summarize(q[k])
            for k in ("psnr_clean", "psnr_adv", "psnr_drop", "ssim_clean", "ssim_adv", "ssim_drop")
        },
        "random_psnr_drop": summarize(r["psnr_drop"]),
        "random_ssim_drop": summarize(r["ssim_drop"]),
        "perturbation": {k: summarize(v) for k, v in rec["perturbation"].items()},
        "normality": {k: _normality_summary(v) for k, v in rec["normality"].items()},
        "per_image": {
            **q,
            "random_psnr_drop": r["psnr_drop"],
            "linf_rel": rec["perturbation"]["linf_rel"],
            "l2_rel": rec["perturbation"]["l2_rel"],
            "delta_mean": rec["perturbation"]["mean"],
            "normaltest_p": [n["normaltest_p"] for n in rec["normality"]["adversarial"]],
            "normaltest_stat": [n["normaltest_stat"] for n in rec["normality"]["adversarial"]],
            "ks_p": [n["ks_p"] for n in rec["normality"]["adversarial"]],
            "ks_stat": [n["ks_stat"] for n in rec["normality"]["adversarial"]],
        },
    }


def run_study(
    config: DenoiserStudyConfig,
    out: str | Path,
    fresh: bool = False,
    progress: bool = False,
    report: bool = True,
) -> Path:
    """Run (or resume) the study; returns the path of ``results.json``.

    Args:
        config: Study configuration.
        out: Output folder (results, reports, ``state/``).
        fresh: Discard the state of a previous run in ``out`` first.
        progress: Show progress bars.
        report: Also write ``report.html`` / ``report.md`` and figures.

    Raises:
        ConfigError: the folder holds a run of a different config (and not ``fresh``).
    """
    from tqdm.auto import tqdm

    from medrobust.denoising.similitude import transfer_tables
    from medrobust.utils.device import resolve_device

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = config.model_dump(mode="json")
    if fresh:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
    else:
        StudyState.precheck(out, settings)  # a changed config is refused before any work
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    images = load_clean_images(config.data)
    if images.test.shape[0] < config.n_test:
        raise ConfigError(
            f"n_test={config.n_test} but the data has only {images.test.shape[0]} test images; "
            "lower n_test or raise data.n."
        )
    bounds = images.bounds
    scale = bounds[1] - bounds[0]
    sigma_abs = config.sigma * scale
    x = images.test[: config.n_test].contiguous()
    gen = torch.Generator().manual_seed(config.seed)
    y = (x + torch.randn(x.shape, generator=gen) * sigma_abs).contiguous()
    inputs = {"x_sha256": _tensor_sha(x), "y_sha256": _tensor_sha(y), "shape": list(x.shape)}
    state = StudyState(
        out, sha256_json({"config": settings, "inputs": inputs}), settings, inputs, fresh=fresh
    )
    device = resolve_device(config.device)
    x_d, y_d = x.to(device), y.to(device)
    clip_range = None
    if config.attack.clip == "extended":
        k = config.attack.clip_sigmas * sigma_abs
        clip_range = (bounds[0] - k, bounds[1] + k)
    ctx = {"bounds": bounds, "scale": scale, "sigma_abs": sigma_abs, "clip_range": clip_range}

    members = _build_members(config, images, state, device, timings, progress)
    names = list(members)
    clean_cache: dict[str, torch.Tensor] = {}

    def clean_out(name: str) -> torch.Tensor:
        # D(y) per member, computed once per process (deterministic, so resumed and
        # fresh runs score against identical outputs).
        if name not in clean_cache:
            clean_cache[name] = denoise(members[name].denoiser, y_d, config.batch_size)
        return clean_cache[name]

    ctx["clean_out"] = clean_out
    norms = ["linf"] + (["l2"] if config.attack.l2_rms is not None else [])

    whitebox: dict[str, dict[str, dict]] = {n: {} for n in norms}
    advs: dict[str, dict[str, torch.Tensor]] = {n: {} for n in norms}
    units = [(norm, name) for norm in norms for name in names]
    for norm, name in tqdm(units, desc="white-box attacks", disable=not progress, leave=False):
        unit_id = f"whitebox/{norm}/{name}"
        tpath = state.tensors(unit_id)
        if not (state.has(unit_id) and tpath.is_file()):
            t0 = time.perf_counter()
            rec, adv = _whitebox_unit(members[name], norm, config, x_d, y_d, ctx)
            _save_tensors(tpath, {"adv": adv})  # the tensors first: the JSON marks the unit done
            state.save(unit_id, rec)
            timings[f"whitebox/{norm}/{name}"] = time.perf_counter() - t0
        whitebox[norm][name] = state.load(unit_id)
        advs[norm][name] = _load_tensors(tpath)["adv"]

    transfer: dict[str, dict[str, dict[str, dict]]] = {}
    pairs = [(norm, a, b) for norm in config.attack.transfer_norms for a in names for b in names]
    for norm, a, b in tqdm(pairs, desc="transfer", disable=not progress, leave=False):
        unit_id = f"transfer/{norm}/{a}__{b}"
        if not state.has(unit_id):
            t0 = time.perf_counter()
            q = quality(
                members[b].denoiser,
                x_d,
                y_d,
                advs[norm][a].to(device),
                bounds,
                config.batch_size,
                clean_out(b),
            )
            if a == b:
                # The diagonal is the white-box result by construction; the recomputed
                # numbers are kept to expose non-deterministic denoisers (e.g. BM3D).
                wbq = whitebox[norm][a]["per_image"]
                q = {**{k: wbq[k] for k in q}, "recomputed_psnr_drop": q["psnr_drop"]}
            cell = {"unit": "transfer", "norm": norm, "source": a, "target": b, **q}
            state.save(unit_id, finite_or_none(cell))
            timings[unit_id] = time.perf_counter() - t0
        transfer.setdefault(norm, {}).setdefault(a, {})[b] = state.load(unit_id)

    results = _assemble(config, images, members, whitebox, transfer, advs, y, ctx, transfer_tables)
    results_path = out / "results.json"
    atomic_write_json(results_path, finite_or_none(results))
    import yaml

    atomic_write_text(
        out / "config.resolved.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    )
    atomic_write_json(out / "environment.json", environment(device, config.seed))
    if report:
        from medrobust.denoising.report import write_reports

        t0 = time.perf_counter()
        write_reports(results, out, members, x, y, advs, config.gallery, config.batch_size)
        timings["report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    atomic_write_json(out / "timings.json", timings)
    return results_path


def _assemble(config, images, members, whitebox, transfer, advs, y, ctx, transfer_tables) -> dict[str, Any]:
    names = list(members)
    wb = {norm: {n: _whitebox_summary(rec) for n, rec in recs.items()} for norm, recs in whitebox.items()}
    tables = {}
    for norm, cells in transfer.items():
        deltas = {n: (advs[norm][n] - y.to(advs[norm][n].device)).cpu() for n in names}
        tables[norm] = transfer_tables(names, cells, deltas)
        diag_ok = all(cells[n][n]["psnr_drop"] == whitebox[norm][n]["per_image"]["psnr_drop"] for n in names)
        tables[norm]["diagonal_matches_whitebox"] = bool(diag_ok)
        tables[norm]["diagonal_recompute_max_abs_diff_db"] = {
            n: float(
                np.max(np.abs(np.subtract(cells[n][n]["recomputed_psnr_drop"], cells[n][n]["psnr_drop"])))
            )
            for n in names
        }
    results = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "config": config.model_dump(mode="json"),
        "fingerprint": fingerprint(config),
        "seeds": {
            "study": config.seed,
            "noise": config.seed,
            "members": {n: member_seed(config.seed, n) for n in names},
        },
        "data": {
            "description": images.description,
            "bounds": list(ctx["bounds"]),
            "n_train": int(images.train.shape[0]),
            "n_test": int(config.n_test),
            "image_shape": list(images.test.shape[1:]),
            "sigma": config.sigma,
            "sigma_abs": ctx["sigma_abs"],
            "clip_range": None if ctx["clip_range"] is None else list(ctx["clip_range"]),
            "noisy_psnr": summarize(_noisy_psnr(images.test[: config.n_test], y, ctx["bounds"])),
        },
        "models": {n: m.describe() for n, m in members.items()},
        "whitebox": wb,
        "transfer": tables,
    }
    results["hybrids"] = _hybrid_results(config, wb, transfer)
    results["findings"] = _findings(members, wb, tables, results["hybrids"])
    return results


def _noisy_psnr(x: torch.Tensor, y: torch.Tensor, bounds: tuple[float, float]) -> list[float]:
    from medrobust.denoising.metrics import psnr

    return psnr(y, x, bounds[1] - bounds[0]).tolist()


def _hybrid_results(config: DenoiserStudyConfig, wb: dict, transfer: dict) -> list[dict[str, Any]]:
    out = []
    for h in config.hybrids:
        rows = {}
        for role, name in (("hybrid", h.name), ("classical", h.classical), ("deep", h.deep)):
            rows[role] = {
                "member": name,
                **{
                    norm: {
                        "psnr_clean": wb[norm][name]["psnr_clean"]["mean"],
                        "psnr_adv": wb[norm][name]["psnr_adv"]["mean"],
                        "psnr_drop": wb[norm][name]["psnr_drop"]["mean"],
                        "ssim_adv": wb[norm][name]["ssim_adv"]["mean"],
                        "method": wb[norm][name]["method"],
                    }
                    for norm in wb
                },
            }
        transfers = {}
        for norm, cells in transfer.items():
            cell = cells[h.deep][h.name]
            transfers[norm] = {
                "source": h.deep,
                "psnr_adv": _mean(cell["psnr_adv"]),
                "psnr_drop": _mean(cell["psnr_drop"]),
                "deep_own_psnr_adv": wb[norm][h.deep]["psnr_adv"]["mean"],
            }
        out.append(
            {"name": h.name, "mode": h.mode, "alpha": h.alpha, "rows": rows, "transfer_from_deep": transfers}
        )
    return out


def _findings(members: dict[str, Member], wb: dict, tables: dict, hybrids: list[dict]) -> dict[str, Any]:
    """Numbers that answer the study's three questions (the docs quote them)."""
    deep = [n for n, m in members.items() if m.kind == "deep"]
    classical = [n for n, m in members.items() if m.kind == "classical"]
    out: dict[str, Any] = {}
    for norm, t in tables.items():
        idx = {n: i for i, n in enumerate(t["members"])}
        rel = np.array(t["relative"], dtype=float)

        def block(src: list[str], dst: list[str], rel=rel, idx=idx) -> float | None:
            vals = [rel[idx[a], idx[b]] for a in src for b in dst if a != b]
            vals = [v for v in vals if np.isfinite(v)]
            return float(np.mean(vals)) if vals else None

        sim = np.array(t["similitude"], dtype=float)
        pairs = [sim[idx[a], idx[b]] for i, a in enumerate(deep) for b in deep[i + 1 :]]
        pairs = [p for p in pairs if np.isfinite(p)]
        out[f"similitude_{norm}"] = {
            "deep_to_deep_relative_transfer": block(deep, deep),
            "deep_to_classical_relative_transfer": block(deep, classical),
            "classical_to_deep_relative_transfer": block(classical, deep),
            "mean_deep_pair_similitude": float(np.mean(pairs)) if pairs else None,
            "min_deep_pair_similitude": float(np.min(pairs)) if pairs else None,
        }
    for norm, recs in wb.items():
        out[f"robustness_{norm}"] = sorted(
            (
                {
                    "member": n,
                    "kind": members[n].kind,
                    "noise_model": members[n].noise_model,
                    "psnr_clean": recs[n]["psnr_clean"]["mean"],
                    "psnr_adv": recs[n]["psnr_adv"]["mean"],
                    "psnr_drop": recs[n]["psnr_drop"]["mean"],
                    "random_psnr_drop": recs[n]["random_psnr_drop"]["mean"],
                }
                for n in members
            ),
            key=lambda r: r["psnr_drop"],
        )
    out["hybrids"] = [
        {
            "name": h["name"],
            **{
                f"{norm}_adv_psnr_gain_over_deep": h["rows"]["hybrid"][norm]["psnr_adv"]
                - h["rows"]["deep"][norm]["psnr_adv"]
                for norm in wb
            },
            "clean_psnr_change_vs_deep": h["rows"]["hybrid"]["linf"]["psnr_clean"]
            - h["rows"]["deep"]["linf"]["psnr_clean"],
        }
        for h in hybrids
    ]
    return out

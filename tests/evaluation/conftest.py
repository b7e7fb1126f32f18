"""Fixtures for the audit tests: an easy synthetic npz (MedMNIST layout) and a tiny trained classifier.

The data are written here (not the phantoms) so the classifier reaches high accuracy in a
second and attacks have correct predictions to flip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SIZE = 32


def _easy_images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 has a bright disc somewhere; class 0 is textured background only."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    labels = rng.integers(0, 2, size=n)
    images = np.empty((n, SIZE, SIZE), dtype=np.uint8)
    for i in range(n):
        img = 70 + 20 * rng.standard_normal((SIZE, SIZE))
        if labels[i]:
            cy, cx = rng.uniform(9, SIZE - 9, size=2)
            r = rng.uniform(4, 7)
            img += 35 * ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2)
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.reshape(-1, 1).astype(np.int64)


@pytest.fixture(scope="session")
def easy_npz(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "easy.npz"
    arrays = {}
    for split, n in (("train", 160), ("val", 16), ("test", 40)):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _easy_images(rng, n)
    np.savez(path, **arrays)
    return path


def _easy_card(source):
    """The model card of classifiers trained on ``easy_npz`` (1 channel, SIZE x SIZE, [0, 1])."""
    from medrobust.models import ModelCard

    return ModelCard(
        in_channels=1,
        class_names=list(source.class_names),
        positive_class=source.class_names[1],
        spatial_size=(SIZE, SIZE),
        modality="chest_xray",
        bounds=(0.0, 1.0),
        mean=[0.3],
        std=[0.15],
    )


@pytest.fixture(scope="session")
def easy_card():
    """``easy_card(source)`` builds the model card for classifiers trained on ``easy_npz``."""
    return _easy_card


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, easy_npz) -> Path:
    """A small_cnn trained for a few epochs on ``easy_npz``, saved as a run folder."""
    import torch
    import torch.nn.functional as F

    from medrobust.data import load_arrays, make_dataset, open_source
    from medrobust.models import build_classifier, save_checkpoint

    source = open_source(str(easy_npz))
    train = make_dataset(source, split="train", preset="chest_xray", spatial_size=(SIZE, SIZE))
    x, y = load_arrays(train)
    # Train on raw and median-filtered images so the median defense keeps the accuracy.
    from medrobust.defenses import create_denoiser

    with torch.no_grad():
        x = torch.cat([x, create_denoiser("median", in_channels=1, bounds=(0, 1), kernel_size=3)(x)])
    y = torch.cat([y, y])
    card = _easy_card(source)
    torch.manual_seed(0)
    model = build_classifier("small_cnn", card, width=6, depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(8):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 32):
            idx = perm[i : i + 32]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.9, f"fixture classifier did not learn the easy task (train accuracy {acc:.2f})"
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "clf")


def _audit_dict(data: Path, model: Path, **over) -> dict:
    """The tiny end-to-end audit: 16 samples, PGD + DeepFool, 2 budgets per norm, one median defense."""
    cfg = {
        "name": "tiny audit",
        "data": {"source": str(data), "split": "test", "preset": "chest_xray", "size": SIZE},
        "model": {"path": str(model)},
        "defenses": [{"name": "med", "denoiser": "median", "params": {"kernel_size": 3}}],
        "attacks": [{"name": "pgd", "params": {"steps": 5}}, {"name": "deepfool", "params": {"steps": 10}}],
        "budgets": {"linf": ["2/255", "8/255"], "l2": [0.25, 1.0]},
        "n_samples": 16,
        "batch_size": 8,
        "seed": 3,
        "device": "cpu",
        "save_examples": 16,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="session")
def audit_dict():
    """``audit_dict(data, model, **overrides)`` builds the tiny audit's config mapping."""
    return _audit_dict


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, easy_npz, tiny_model):
    """The tiny audit run once per test session: ``(config, results, run_dir)``."""
    import yaml

    from medrobust.evaluation.config import load_config
    from medrobust.evaluation.runner import run_audit

    root = tmp_path_factory.mktemp("audit")
    cfg_path = root / "audit.yaml"
    cfg_path.write_text(yaml.safe_dump(_audit_dict(easy_npz, tiny_model)))
    config = load_config(cfg_path)
    run_dir = root / "run"
    results = run_audit(config, run_dir, progress=False)
    return config, results, run_dir, cfg_path

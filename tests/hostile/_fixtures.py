"""Small, fast inputs the hostile cases start from (an untrained tiny classifier run folder)."""

from __future__ import annotations

from pathlib import Path


def tiny_classifier_run(folder: Path, size: int = 32, class_names: tuple[str, str] = ("0", "1")) -> Path:
    """Save an untrained 1-channel small_cnn for the chest X-ray preset as a run folder.

    The default class names are those of a MedMNIST-style ``.npz`` opened by path (named by
    index). Pass ``class_names=("normal", "pneumonia")`` for phantom data (``phantom:chest_xray``
    or an audit's ``data.phantom`` block), which carry the phantom's class names.
    """
    import torch

    from medrobust.models import ModelCard, build_classifier, save_checkpoint

    card = ModelCard(
        in_channels=1,
        class_names=list(class_names),
        positive_class=class_names[1],
        spatial_size=(size, size),
        modality="chest_xray",
        bounds=(0.0, 1.0),
        mean=[0.5],
        std=[0.25],
    )
    torch.manual_seed(0)
    model = build_classifier("small_cnn", card, width=4, depth=2)
    return save_checkpoint(model.eval(), folder)


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def audit_yaml(model: Path, attacks: str, extra: str = "") -> str:
    """A minimal audit config on phantom data with the given ``attacks:`` block."""
    return (
        "data:\n  phantom: {modality: chest_xray, n: 24, size: 32, seed: 0}\n  preset: chest_xray\n"
        f"model:\n  path: {model}\n"
        f"attacks:\n{attacks}\n"
        "budgets: {linf: [2/255], l2: [0.5]}\n"
        "threats: [graybox]\nn_samples: 4\nbatch_size: 4\ndevice: cpu\n" + extra
    )

"""Hostile per-epoch training checkpoints and resumes (``--resume``), each through the CLI.

The one training loop writes ``OUT/checkpoint/last.pt`` every epoch and reads it back with
``torch.load(weights_only=True)``: a pickle that would run code, a truncated or foreign file, a
folder in its place, a resume whose settings changed and an unfinished run started again without
``--resume`` must all end as one error line before any training.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from ._case import Call, hostile

_TRAIN = [
    "train",
    "classifier",
    "--modality",
    "chest_xray",
    "--epochs",
    "2",
    "--device",
    "cpu",
    "--no-progress",
]


def _out(d: Path) -> Path:
    return d / "out"


def _checkpoint(d: Path) -> Path:
    path = _out(d) / "checkpoint" / "last.pt"
    path.parent.mkdir(parents=True)
    return path


def _train(d: Path, *extra: str) -> list[str]:
    return [*_TRAIN, "--data", str(d / "data.npz"), *extra, "--out", str(_out(d))]


class _Marker:
    """Unpickling this object creates a file (what a malicious checkpoint would do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_payload(d: Path) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"schema": "medrobust.training-checkpoint/1", "payload": _Marker(str(d / "pwned"))}, buf)
    return buf.getvalue()


def _valid_state(config: dict) -> dict:
    return {
        "schema": "medrobust.training-checkpoint/1",
        "epoch": 1,
        "config": config,
        "model": {},
        "optimizer": {},
        "rows": [],
        "early_stopping": {"best_score": 0.5, "best_loss": 1.0, "stale": 0},
        "best": {},
    }


def _classifier_config(d: Path, **changes) -> dict:
    from medrobust.models.training import TrainClassifierConfig

    values = {
        "data": str(d / "data.npz"),
        "modality": "chest_xray",
        "epochs": 2,
        "device": "cpu",
        "progress": False,
        "out": str(_out(d)),
    }
    return TrainClassifierConfig.from_dict({**values, **changes}).model_dump(mode="json")


def _case(
    writer: Callable[[Path], None], extra: tuple[str, ...], names: tuple[str, ...]
) -> Callable[[Path], Call]:
    def build(d: Path) -> Call:
        writer(d)
        return Call(_train(d, *extra), names=names)

    return build


hostile("loop-resume-pickle-payload")(
    _case(lambda d: _checkpoint(d).write_bytes(_pickle_payload(d)), ("--resume",), ("last.pt",))
)
hostile("loop-resume-truncated-checkpoint")(
    _case(lambda d: _checkpoint(d).write_bytes(_pickle_payload(d)[:300]), ("--resume",), ("last.pt",))
)
hostile("loop-resume-empty-checkpoint")(
    _case(lambda d: _checkpoint(d).write_bytes(b""), ("--resume",), ("last.pt",))
)
hostile("loop-resume-checkpoint-is-a-folder")(
    _case(lambda d: _checkpoint(d).mkdir(), ("--resume",), ("last.pt",))
)


def _foreign(d: Path) -> None:
    import torch

    torch.save({"schema": "someone-else/3", "weights": torch.zeros(2)}, _checkpoint(d))


hostile("loop-resume-foreign-schema")(_case(_foreign, ("--resume",), ("last.pt",)))
hostile("loop-resume-without-checkpoint")(_case(lambda d: _out(d).mkdir(), ("--resume",), ("--resume",)))


def _saved_with_lr(d: Path) -> None:
    import torch

    torch.save(_valid_state(_classifier_config(d, lr=1e-3)), _checkpoint(d))


hostile("loop-resume-changed-lr")(_case(_saved_with_lr, ("--lr", "0.01", "--resume"), ("lr: 0.001 -> 0.01",)))
hostile("loop-unfinished-run-without-resume")(_case(_saved_with_lr, (), ("--resume",)))


@hostile("loop-denoiser-resume-pickle-payload")
def _denoiser_payload(d: Path) -> Call:
    _checkpoint(d).write_bytes(_pickle_payload(d))
    argv = ["train", "denoiser", "--arch", "dncnn", "--data", "phantom:brain_mri", "-n", "8", "--size", "32"]
    return Call(
        [*argv, "--epochs", "1", "--no-progress", "--resume", "--out", str(_out(d))], names=("last.pt",)
    )

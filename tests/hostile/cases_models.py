"""Hostile model files, model cards and training inputs, each through the CLI.

Every case builds a tiny (untrained) run folder with the Python API and then corrupts one thing
in it: code in a file named like weights, a card.json that is not a card, NaN weights,
architecture arguments that ask for terabytes. All must fail while loading or validating.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ._case import Call, hostile
from ._fixtures import tiny_classifier_run, write_yaml

#: The chest X-ray phantom's class names (what phantom data carry).
PHANTOM_CLASSES = ("normal", "pneumonia")

_AUDIT_TAIL = [
    "--data",
    "phantom:chest_xray",
    "--attacks",
    "fgsm",
    "--eps",
    "2/255",
    "--samples",
    "4",
    "--device",
    "cpu",
]


def _out(d: Path) -> str:
    return str(d / "out")


def _audit(d: Path, model: Path, card: Path | None = None) -> list[str]:
    argv = ["audit", "--model", str(model)]
    if card is not None:
        argv += ["--card", str(card)]
    return [*argv, *_AUDIT_TAIL, "--out", _out(d)]


class MarkerOnLoadAndRun(nn.Module):
    """A TorchScript program that creates a file when loaded and another when run."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.loaded = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        touched = torch.from_file(self.marker, shared=True, size=8, dtype=torch.uint8)
        return x.flatten(1)[:, :2] + touched[:1].float() * 0.0

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.marker = state[0]
        self.training = state[1]
        touched = torch.from_file(self.marker + ".load", shared=True, size=8, dtype=torch.uint8)
        self.loaded = float(touched.sum())


class ChannelsFirstNet(nn.Module):
    """An NCHW conv net (fed NHWC input when the card says so)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


class ReturnsInts(nn.Module):
    def forward(self, x: torch.Tensor) -> list[int]:
        return [1, 2]


def _script(module: nn.Module, path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, still supported
        torch.jit.script(module).save(str(path))
    return path


def _card_values(**update) -> dict:
    values = {
        "in_channels": 1,
        "class_names": ["normal", "pneumonia"],
        "positive_class": "pneumonia",
        "spatial_size": [32, 32],
        "modality": "chest_xray",
        "bounds": [0.0, 1.0],
    }
    values.update(update)
    return values


def _rewrite_safetensors(path: Path, edit_state=None, metadata: dict | None = None) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
    state = load_file(str(path))
    if edit_state is not None:
        edit_state(state)
    meta.update(metadata or {})
    save_file(state, str(path), metadata=meta)


def _tiny_npz(path: Path, labels: tuple[int, ...] = (0, 1)) -> Path:
    """A MedMNIST-layout npz with a few 32x32 images per split, labels cycling through ``labels``."""
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, 32, 32), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([labels[i % len(labels)] for i in range(n)], dtype=np.int64)[
            :, None
        ]
    np.savez(path, **arrays)
    return path


# -- 1. code in a file named like weights ------------------------------------------------------
def _torchscript_as_weights(suffix: str, with_card: bool) -> Callable[[Path], Call]:
    def build(d: Path) -> Call:
        run = d / "run"
        run.mkdir()
        (run / "card.json").write_text(json.dumps(_card_values()), encoding="utf-8")
        # the markers land in the case folder: the corpus fails if either is ever created
        model = _script(MarkerOnLoadAndRun(str(d / "code_ran")), run / f"model{suffix}")
        return Call(_audit(d, model, run / "card.json" if with_card else None), names=(f"model{suffix}",))

    return build


hostile("models-torchscript-named-pt")(_torchscript_as_weights(".pt", True))
hostile("models-torchscript-named-pth-no-card")(_torchscript_as_weights(".pth", False))
hostile("models-torchscript-named-bin")(_torchscript_as_weights(".bin", True))
hostile("models-torchscript-named-ckpt")(_torchscript_as_weights(".ckpt", True))


@hostile("models-pickle-payload-pt")
def _pickle_payload(d: Path) -> Call:
    import pickle

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(d / 'code_ran')!r}, 'w').write('pwned')",))

    run = d / "run"
    run.mkdir()
    (run / "card.json").write_text(json.dumps(_card_values(arch="small_cnn")), encoding="utf-8")
    with open(run / "model.pt", "wb") as fh:
        pickle.dump({"state_dict": Payload()}, fh)
    return Call(_audit(d, run / "model.pt", run / "card.json"), names=("model.pt",))


# -- 2. TorchScript programs that do not fit their card ---------------------------------------------
def _torchscript_misfit(module: Callable[[], nn.Module], **card) -> Callable[[Path], Call]:
    def build(d: Path) -> Call:
        run = d / "vendor"
        run.mkdir()
        (run / "card.json").write_text(json.dumps(_card_values(**card)), encoding="utf-8")
        model = _script(module(), run / "model.ts")
        return Call(_audit(d, model, run / "card.json"), names=("model.ts",))

    return build


hostile("models-torchscript-layout-mismatch")(_torchscript_misfit(ChannelsFirstNet, input_layout="NHWC"))
hostile("models-torchscript-returns-ints")(_torchscript_misfit(ReturnsInts))
hostile("models-torchscript-class-count-mismatch")(
    _torchscript_misfit(ChannelsFirstNet, class_names=["a", "b", "c"], positive_class=None)
)


# -- 3. and 6. card.json that is not a card ------------------------------------------------------
def _card_case(write: Callable[[Path], None]) -> Callable[[Path], Call]:
    def build(d: Path) -> Call:
        run = tiny_classifier_run(d / "run", class_names=PHANTOM_CLASSES)
        card = run / "card.json"
        card.unlink()
        write(card)
        return Call(_audit(d, run), names=("card.json",))

    return build


def _json_card(**update) -> Callable[[Path], None]:
    return lambda p: p.write_text(json.dumps(_card_values(**update)).replace('"Infinity"', "Infinity"))


_CARDS: dict[str, Callable[[Path], None]] = {
    "folder": lambda p: p.mkdir(),
    "latin1": lambda p: p.write_bytes('{"modality": "r\xe9sum\xe9"}'.encode("latin-1")),
    "not-json": lambda p: p.write_text('{"in_channels": 1, "class_names": ['),
    "json-list": lambda p: p.write_text(json.dumps([_card_values()])),
    "deeply-nested": lambda p: p.write_text("[" * 200_000 + "]" * 200_000),
    "negative-spatial-size": _json_card(spatial_size=[-32, 32]),
    "huge-spatial-size": _json_card(spatial_size=[100_000, 100_000]),
    "infinite-bounds": _json_card(bounds=[0.0, "Infinity"]),
    "reversed-bounds": _json_card(bounds=[1.0, 0.0]),
    "one-class": _json_card(class_names=["normal"], positive_class=None),
    "num-classes-mismatch": _json_card(num_classes=5),
    "too-many-classes": _json_card(class_names=[f"c{i}" for i in range(10_001)], positive_class=None),
    "zero-channels": _json_card(in_channels=0),
    "preset-options-typo": _json_card(preset_options={"sclaing": "range"}),
    "preset-options-window-reversed": _json_card(preset_options={"value_range": [400, -1000]}),
}
for _name, _write in _CARDS.items():
    hostile(f"models-card-{_name}")(_card_case(_write))


# -- 4. non-finite weights ---------------------------------------------------------------------------
@hostile("models-weights-nan-safetensors")
def _nan_weights(d: Path) -> Call:
    run = tiny_classifier_run(d / "run", class_names=PHANTOM_CLASSES)

    def poison(state):
        state["backbone.features.0.weight"].view(-1)[0] = float("nan")

    _rewrite_safetensors(run / "model.safetensors", poison)
    return Call(_audit(d, run), names=("model.safetensors",))


@hostile("models-weights-inf-state-dict")
def _inf_state_dict(d: Path) -> Call:
    from safetensors.torch import load_file

    run = tiny_classifier_run(d / "run", class_names=PHANTOM_CLASSES)
    state = load_file(str(run / "model.safetensors"))
    state["backbone.head.bias"][0] = float("inf")
    (run / "model.safetensors").unlink()
    torch.save(state, run / "weights.pth")
    return Call(_audit(d, run / "weights.pth", run / "card.json"), names=("weights.pth",))


@hostile("models-safetensors-truncated")
def _truncated(d: Path) -> Call:
    run = tiny_classifier_run(d / "run", class_names=PHANTOM_CLASSES)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    return Call(_audit(d, run), names=("model.safetensors",))


@hostile("models-state-dict-zip-bomb")
def _zip_bomb(d: Path) -> Call:
    run = d / "run"
    run.mkdir()
    (run / "card.json").write_text(json.dumps(_card_values(arch="small_cnn")), encoding="utf-8")
    with zipfile.ZipFile(run / "model.pt", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # torch.load inflates deflated records: without the check, a 2 MB file can ask for 2 GB
        zf.writestr("archive/data.pkl", b"\0" * (64 * 2**20))
    return Call(_audit(d, run / "model.pt", run / "card.json"), names=("model.pt",))


# -- 5. architecture arguments from the file's metadata -----------------------------------------------------
def _metadata_case(meta: dict, bomb: bool = False) -> Callable[[Path], Call]:
    def build(d: Path) -> Call:
        run = tiny_classifier_run(d / "run", class_names=PHANTOM_CLASSES)
        _rewrite_safetensors(run / "model.safetensors", metadata=meta)
        return Call(_audit(d, run), names=("model.safetensors",), bomb=bomb)

    return build


hostile("models-arch-kwargs-list")(_metadata_case({"arch_kwargs": "[4, 2]"}))
hostile("models-arch-kwargs-width-200000")(_metadata_case({"arch_kwargs": '{"width": 200000}'}, bomb=True))
hostile("models-arch-kwargs-unknown-name")(_metadata_case({"arch_kwargs": '{"widht": 4, "depth": 2}'}))
hostile("models-arch-kwargs-wrong-type")(_metadata_case({"arch_kwargs": '{"width": "4", "depth": 2}'}))
hostile("models-arch-kwargs-not-json")(_metadata_case({"arch_kwargs": "{width: 4"}))
hostile("models-arch-unknown")(_metadata_case({"arch": "small_cn"}))


# -- denoiser checkpoints ---------------------------------------------------------------------------------
def _denoiser_case(corrupt: Callable[[Path], None], names: tuple[str, ...]) -> Callable[[Path], Call]:
    def build(d: Path) -> Call:
        from medrobust.defenses import create_denoiser
        from medrobust.defenses.checkpoint import save_denoiser

        model = tiny_classifier_run(d / "run")
        den = save_denoiser(
            create_denoiser("dncnn", in_channels=1, bounds=(0, 1), depth=3, width=4), d / "den"
        )
        corrupt(den)
        # the audit reads the data before it builds the defenses: a small npz, not phantom generation
        data = _tiny_npz(d / "data.npz")
        argv = [
            "audit",
            "--model",
            str(model),
            "--data",
            str(data),
            "--modality",
            "chest_xray",
            *_AUDIT_TAIL[2:],
        ]
        return Call([*argv, "--defense", f"den={den}", "--out", _out(d)], names=names)

    return build


def _nan_denoiser(den: Path) -> None:
    def poison(state):
        state[sorted(state)[0]].view(-1)[0] = float("nan")

    _rewrite_safetensors(den / "denoiser.safetensors", poison)


hostile("models-denoiser-weights-nan")(_denoiser_case(_nan_denoiser, ("denoiser.safetensors",)))
hostile("models-denoiser-spec-latin1")(
    _denoiser_case(
        lambda den: (den / "denoiser.json").write_bytes(b'{"name": "caf\xe9"}'), ("denoiser.json",)
    )
)


@hostile("models-train-defense-nan-classifier")
def _defense_nan_classifier(d: Path) -> Call:
    run = tiny_classifier_run(d / "run")

    def poison(state):
        state["backbone.head.weight"].view(-1)[1] = float("nan")

    _rewrite_safetensors(run / "model.safetensors", poison)
    argv = ["train", "defense", "--classifier", str(run), "--kind", "dae", "--epochs", "1", "--device", "cpu"]
    return Call([*argv, "--out", _out(d)], names=("model.safetensors",))


# -- 7. training inputs --------------------------------------------------------------------------------------
_TRAIN = [
    "train",
    "classifier",
    "--modality",
    "chest_xray",
    "--epochs",
    "1",
    "--device",
    "cpu",
    "--no-progress",
]


def _train_option_case(option: str, value: str, names: tuple[str, ...]) -> Callable[[Path], Call]:
    def build(d: Path) -> Call:
        return Call([*_TRAIN, "--data", "phantom:chest_xray", option, value, "--out", _out(d)], names=names)

    return build


hostile("models-train-lr-nan")(_train_option_case("--lr", "nan", ("--lr",)))
hostile("models-train-lr-zero")(_train_option_case("--lr", "0", ("--lr",)))
hostile("models-train-lr-negative")(_train_option_case("--lr", "-1e-3", ("--lr",)))
hostile("models-train-seed-2e20")(_train_option_case("--seed", "200000000000000000000", ("--seed",)))
hostile("models-train-size-100000")(_train_option_case("--size", "100000", ("--size",)))
hostile("models-train-workers-1e6")(_train_option_case("--workers", "1000000", ("--workers",)))


def _train_yaml_case(text: str, names: tuple[str, ...], bomb: bool = False) -> Callable[[Path], Call]:
    def build(d: Path) -> Call:
        cfg = write_yaml(d / "train.yaml", "data: phantom:chest_xray\nmodality: chest_xray\n" + text)
        return Call(["train", "classifier", "--config", str(cfg), "--out", _out(d)], names=names, bomb=bomb)

    return build


hostile("models-train-arch-kwargs-width-200000")(
    _train_yaml_case("arch_kwargs: {width: 200000}\n", ("arch_kwargs",), bomb=True)
)
hostile("models-train-arch-kwargs-list")(_train_yaml_case("arch_kwargs: [16, 3]\n", ("arch_kwargs",)))
hostile("models-train-arch-kwargs-unknown")(_train_yaml_case("arch_kwargs: {widht: 16}\n", ("widht",)))
hostile("models-train-weight-decay-inf")(_train_yaml_case("weight_decay: .inf\n", ("weight_decay",)))
hostile("models-train-val-split-nan")(_train_yaml_case("val_split: .nan\n", ("val_split",)))


@hostile("models-train-one-class-npz")
def _one_class_npz(d: Path) -> Call:
    data = _tiny_npz(d / "one.npz", labels=(0,))
    return Call([*_TRAIN, "--data", str(data), "--out", _out(d)], names=("one.npz",))

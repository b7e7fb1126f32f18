"""Hostile "bring your own model" inputs: .pt2 programs, library names, MONAI bundles, card init.

Each case builds a small vendor artefact in the case folder and calls the CLI (``audit`` or
``card init``); every one must be refused while loading or validating, naming the file, the
model name or the flag, and must never run code a bundle config spells as an expression.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ._case import Call, hostile

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


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def _card(d: Path, **update) -> Path:
    values = {
        "in_channels": 1,
        "class_names": ["normal", "pneumonia"],  # the chest X-ray phantom's
        "spatial_size": [32, 32],
        "modality": "chest_xray",
        "bounds": [0.0, 1.0],
        **update,
    }
    path = d / "card.json"
    path.write_text(json.dumps(values), encoding="utf-8")
    return path


def _audit(d: Path, model: str | Path, card: Path | None = None) -> list[str]:
    argv = ["audit", "--model", str(model)]
    if card is not None:
        argv += ["--card", str(card)]
    return [*argv, *_AUDIT_TAIL, "--out", str(d / "out")]


# -- .pt2 -----------------------------------------------------------------------------------------
@hostile("byom-pt2-garbage")
def _pt2_garbage(d: Path) -> Call:
    model = d / "model.pt2"
    model.write_bytes(b"PK\x03\x04 not really a zip")
    return Call(_audit(d, model, _card(d)), names=("model.pt2",))


@hostile("byom-pt2-fixed-batch")
def _pt2_fixed_batch(d: Path) -> Call:
    model = d / "fixed.pt2"
    torch.export.save(torch.export.export(_Net().eval(), (torch.rand(2, 1, 32, 32),)), str(model))
    return Call(_audit(d, model, _card(d)), names=("fixed.pt2",))


@hostile("byom-pt2-card-channels-mismatch")
def _pt2_misfit(d: Path) -> Call:
    model = d / "grey.pt2"
    dyn = {"x": {0: torch.export.Dim("batch")}}
    torch.export.save(
        torch.export.export(_Net().eval(), (torch.rand(2, 1, 32, 32),), dynamic_shapes=dyn), str(model)
    )
    return Call(_audit(d, model, _card(d, in_channels=3)), names=("grey.pt2",))


# -- library names ---------------------------------------------------------------------------------
@hostile("byom-torchvision-no-weights")
def _tv_no_weights(d: Path) -> Call:
    return Call(_audit(d, "torchvision:resnet18", _card(d, in_channels=3)), names=("torchvision:resnet18",))


@hostile("byom-torchvision-unknown-name")
def _tv_unknown(d: Path) -> Call:
    return Call(_audit(d, "torchvision:resnet81", _card(d, in_channels=3)), names=("resnet81",))


@hostile("byom-weights-torchscript-archive")
def _tv_weights_program(d: Path) -> Call:
    """--weights is read as weights only: a TorchScript program named .pt is refused, never run."""
    weights = d / "weights.pt"
    torch.jit.script(_Net().eval()).save(str(weights))
    argv = _audit(d, "torchvision:resnet18", _card(d, in_channels=3, channels="replicate"))
    return Call([*argv, "--weights", str(weights)], names=("weights.pt",))


@hostile("byom-weights-for-a-file-model")
def _weights_for_file(d: Path) -> Call:
    model = d / "grey.pt2"
    model.write_bytes(b"never read")
    weights = d / "w.safetensors"
    weights.write_bytes(b"never read")
    return Call([*_audit(d, model, _card(d)), "--weights", str(weights)], names=("'weights'",))


@hostile("byom-weights-missing-file")
def _weights_missing(d: Path) -> Call:
    argv = _audit(d, "torchvision:resnet18", _card(d, in_channels=3, channels="replicate"))
    return Call([*argv, "--weights", str(d / "nope.safetensors")], names=("nope.safetensors",))


@hostile("byom-timm-name")
def _timm(d: Path) -> Call:
    return Call(_audit(d, "timm:resnet18", _card(d, in_channels=3)), names=("timm",))


@hostile("byom-library-typo")
def _typo(d: Path) -> Call:
    return Call(_audit(d, "tourchvision:resnet18", _card(d, in_channels=3)), names=("tourchvision:resnet18",))


# -- MONAI bundles ---------------------------------------------------------------------------------
_CHANNEL_DEF = {"0": "normal", "1": "pneumonia"}


def _bundle(d: Path, network_def: dict, outputs: dict | None = None) -> Path:
    root = d / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    meta = {
        "network_data_format": {
            "inputs": {"image": {"num_channels": 1, "spatial_shape": [32, 32], "value_range": [0, 1]}},
            "outputs": {"pred": outputs or {"num_channels": 2, "channel_def": _CHANNEL_DEF}},
        }
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    (root / "configs" / "inference.json").write_text(
        json.dumps({"network_def": network_def}), encoding="utf-8"
    )
    torch.save(_Net().state_dict(), root / "models" / "model.pt")
    return root


def _bundle_case(network_def: Callable[[Path], dict], names: tuple[str, ...], **kw) -> Callable[[Path], Call]:
    def build(d: Path) -> Call:
        return Call(_audit(d, _bundle(d, network_def(d), **kw)), names=names)

    return build


hostile("byom-bundle-expression")(
    _bundle_case(
        lambda d: {"_target_": "Classifier", "in_shape": f"$open({str(d / 'code_ran')!r}, 'w')"},
        ("inference.json",),
    )
)
hostile("byom-bundle-foreign-target")(
    _bundle_case(lambda d: {"_target_": "os.system", "command": "true"}, ("inference.json",))
)
hostile("byom-bundle-nested-target")(
    _bundle_case(
        lambda d: {"_target_": "Classifier", "in_shape": {"_target_": "subprocess.run", "args": ["true"]}},
        ("inference.json",),
    )
)
hostile("byom-bundle-huge-network")(
    _bundle_case(
        lambda d: {
            "_target_": "Classifier",
            "in_shape": [1, 32, 32],
            "classes": 2,
            "channels": [200000, 200000],
            "strides": [2, 2],
        },
        ("inference.json",),
    )
)
hostile("byom-bundle-dangling-reference")(
    _bundle_case(lambda d: {"_target_": "Classifier", "in_shape": "@nowhere#x"}, ("inference.json",))
)
hostile("byom-bundle-no-class-names")(
    _bundle_case(lambda d: {"_target_": "Classifier"}, ("metadata.json",), outputs={"num_channels": 2})
)


@hostile("byom-bundle-metadata-not-json")
def _bundle_bad_meta(d: Path) -> Call:
    root = _bundle(d, {"_target_": "Classifier"})
    (root / "configs" / "metadata.json").write_text("{not json", encoding="utf-8")
    return Call(_audit(d, root), names=("metadata.json",))


# -- cards -----------------------------------------------------------------------------------------
@hostile("byom-card-replicate-bad-channels")
def _replicate_bad(d: Path) -> Call:
    model = d / "grey.pt2"
    dyn = {"x": {0: torch.export.Dim("batch")}}
    torch.export.save(
        torch.export.export(_Net().eval(), (torch.rand(2, 1, 32, 32),), dynamic_shapes=dyn), str(model)
    )
    card = _card(d, in_channels=2, channels="replicate", model_channels=3)
    return Call(_audit(d, model, card), names=("card.json",))


def _onnx(d: Path) -> Path:
    path = d / "vendor.onnx"
    torch.onnx.export(
        _Net().eval(),
        (torch.rand(2, 1, 32, 32),),
        str(path),
        dynamo=False,
        input_names=["image"],
        dynamic_axes={"image": {0: "batch"}},
    )
    return path


def _card_init(flags: list[str], names: tuple[str, ...]) -> Callable[[Path], Call]:
    def build(d: Path) -> Call:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter
            model = _onnx(d)
        return Call(["card", "init", str(model), "--out", str(d / "out" / "card.json"), *flags], names=names)

    return build


hostile("byom-card-init-no-terminal")(_card_init([], ("class_names",)))
hostile("byom-card-init-bad-bounds")(
    _card_init(["--class-names", "a,b", "--bounds", "1,nan", "--modality", "x"], ("--bounds",))
)
hostile("byom-card-init-class-count")(
    _card_init(["--class-names", "a,b,c", "--bounds", "0,1", "--modality", "x"], ("--class-names",))
)
hostile("byom-card-init-one-class")(
    _card_init(["--class-names", "a", "--bounds", "0,1", "--modality", "x"], ("--class-names",))
)


@hostile("byom-card-init-state-dict")
def _card_init_state_dict(d: Path) -> Call:
    path = d / "weights.pt"
    torch.save(_Net().state_dict(), path)
    return Call(["card", "init", str(path), "--out", str(d / "out" / "card.json")], names=("weights.pt",))

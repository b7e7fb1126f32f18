"""The report's "how the model was imported" line (``evaluation.audited.import_summary``), one test per kind.

Each model is loaded the way users bring it (``load_model`` / ``register_live_model``), so the
summary reads the ``import_info`` the loaders really write; ONNX and timm (onnx2torch's
conversion and the timm package are exercised elsewhere or absent here) use the record their
loaders write.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from medrobust.evaluation.audited import CONVERTERS, import_summary
from medrobust.models import ModelCard, load_model


class TinyNet(nn.Module):
    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _card(**kw) -> ModelCard:
    return ModelCard.model_validate(
        {"in_channels": 1, "class_names": ["normal", "pneumonia"], "spatial_size": (16, 16), **kw}
    )


def _summary(model) -> dict:
    return import_summary(model, model.card)


def test_every_format_load_model_writes_has_a_converter_entry():
    from medrobust.models.hub import HUB_SCHEMES
    from medrobust.models.imports import FORMATS

    kinds = {"medrobust", "monai_bundle", "module", *FORMATS, *HUB_SCHEMES} - {"safetensors"}
    assert kinds <= set(CONVERTERS)


def test_medrobust_run_folder_and_state_dict(tmp_path):
    from medrobust.models import build_classifier, save_checkpoint

    card = _card(arch="small_cnn")
    run = save_checkpoint(build_classifier("small_cnn", card, width=4, depth=2).eval(), tmp_path / "run")
    summary = _summary(load_model(run))
    assert summary["format"] == "medrobust" and summary["converter"] is None and summary["source"] is None
    from safetensors.torch import load_file

    torch.save(load_file(str(run / "model.safetensors")), tmp_path / "w.pth")
    state = load_model(tmp_path / "w.pth", card=run / "card.json", arch_kwargs={"width": 4, "depth": 2})
    summary = _summary(state)
    assert summary["format"] == "state_dict" and summary["converter"] is None


def test_torchscript(tmp_path):
    path = tmp_path / "m.ts"
    torch.jit.script(TinyNet().eval()).save(str(path))
    summary = _summary(load_model(path, card=_card()))
    assert (summary["format"], summary["converter"]) == ("torchscript", "torch.jit.load")
    assert summary["reference"] is None and summary["channels"] is None


def test_pt2_record():
    # the loader's record (tests/models/test_bring_your_own.py loads a real .pt2 and checks it)
    summary = import_summary(SimpleNamespace(import_info={"format": "pt2"}), _card())
    assert (summary["format"], summary["converter"]) == ("pt2", "torch.export.load")


def test_torchvision_with_local_weights_and_replicated_grey_channel(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    weights = tmp_path / "r18.safetensors"
    save_file(torchvision.models.resnet18(weights=None, num_classes=2).state_dict(), str(weights))
    card = _card(in_channels=3, channels="replicate", spatial_size=(32, 32))
    summary = _summary(load_model("torchvision:resnet18", card=card, weights=weights))
    assert summary["format"] == "torchvision" and "torchvision.models" in summary["converter"]
    assert summary["source"] == f"torchvision:resnet18 with weights {weights}"
    assert summary["channels"] == "grey images repeated to 3 channels inside the model"


def test_timm_record():
    model = SimpleNamespace(
        import_info={"format": "timm", "name": "resnet10t", "weights": "/w/r10.safetensors"}
    )
    summary = import_summary(model, _card(in_channels=3))
    assert "timm.create_model (pretrained=False)" in summary["converter"]
    assert summary["source"] == "timm:resnet10t with weights /w/r10.safetensors"


def test_onnx_record():
    info = {"format": "onnx", "max_abs_diff": 2e-7, "tolerance": 1e-4, "n_check": 2}
    summary = import_summary(
        SimpleNamespace(import_info=info), _card(input_layout="NHWC", outputs="probabilities")
    )
    assert (summary["converter"], summary["reference"]) == ("onnx2torch", "onnxruntime")
    assert summary["max_abs_diff"] == 2e-7 and summary["input_layout"] == "NHWC"
    assert summary["wrapping"].startswith("probabilities")


def _bundle(tmp_path, with_weights: bool = True):
    from monai.networks.nets import Classifier

    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    meta = {
        "network_data_format": {
            "inputs": {"image": {"num_channels": 1, "spatial_shape": [32, 32], "value_range": [0, 1]}},
            "outputs": {"pred": {"num_channels": 2, "channel_def": {"0": "normal", "1": "pneumonia"}}},
        }
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    net_def = {
        "_target_": "Classifier",
        "in_shape": [1, 32, 32],
        "classes": 2,
        "channels": [4],
        "strides": [2],
    }
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": net_def}))
    net = Classifier(in_shape=[1, 32, 32], classes=2, channels=[4], strides=[2]).eval()
    if with_weights:
        torch.save(net.state_dict(), root / "models" / "model.pt")
    else:
        torch.jit.script(net).save(str(root / "models" / "model.ts"))
    return root


@pytest.mark.parametrize("with_weights", [True, False])
def test_monai_bundle(tmp_path, with_weights):
    summary = _summary(load_model(_bundle(tmp_path, with_weights)))
    assert summary["format"] == "monai_bundle"
    if with_weights:
        assert "network_def" in summary["converter"] and summary["source"] == "network Classifier"
    else:
        assert "models/model.ts" in summary["converter"] and summary["source"] == "network torchscript"


def test_live_module():
    from medrobust.models.live import register_live_model

    spec = register_live_model(TinyNet().eval(), _card())
    summary = _summary(load_model(spec))
    assert summary["format"] == "module" and "live nn.Module" in summary["converter"]
    assert summary["source"] == "class TinyNet"

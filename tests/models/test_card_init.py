"""``medrobust card init``: probe a model for its card, ask only for what it cannot infer."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medrobust.cli.main import main
from medrobust.models import ModelCard, load_model
from medrobust.models.probe import classify_outputs, probe_model


class SoftmaxNHWC(nn.Module):
    """A deployed RGB model exported channels-last with a softmax head (as TensorFlow exports are)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x.permute(0, 3, 1, 2))).mean(dim=(2, 3))
        return torch.softmax(self.head(h), dim=1)


class FixedSizeLogits(nn.Module):
    """A grey NCHW model with a flatten + linear head: it runs on one input size only."""

    def __init__(self, size: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 4, stride=4)
        self.head = nn.Linear(2 * (size // 4) ** 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def _onnx_nhwc_softmax(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "vendor" / "model.onnx"
    path.parent.mkdir()
    torch.onnx.export(
        SoftmaxNHWC().eval(),
        (torch.rand(2, 32, 32, 3),),
        str(path),
        dynamo=False,
        input_names=["image"],
        output_names=["probs"],
        dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}},
    )
    return path


def test_classify_outputs():
    logits = torch.randn(4, 3)
    assert classify_outputs(logits) == "logits"
    assert classify_outputs(torch.softmax(logits, 1)) == "probabilities"
    assert classify_outputs(torch.log_softmax(logits, 1)) == "log_probabilities"


def test_card_init_onnx_softmax_nhwc_infers_layout_and_probabilities(tmp_path, capsys):
    path = _onnx_nhwc_softmax(tmp_path)
    out = tmp_path / "card.json"
    argv = ["card", "init", str(path), "--out", str(out)]
    flags = ["--class-names", "benign,malignant", "--bounds", "0,1", "--modality", "skin"]
    assert main([*argv, *flags]) == 0
    text = capsys.readouterr().out
    card = ModelCard.load(out)
    assert card.input_layout == "NHWC" and card.outputs == "probabilities"
    assert card.in_channels == 3 and card.spatial_size == (32, 32) and card.num_classes == 2
    assert card.class_names == ["benign", "malignant"] and card.modality == "skin"
    assert "NHWC" in text and "every output >= 0 and each row sums to 1" in text
    # the written card imports the model as the audit will
    model = load_model(path, card=out)
    assert model.import_info["format"] == "onnx" and model.import_info["max_abs_diff"] <= 1e-4
    # no overwrite without --force
    assert main([*argv, *flags]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, *flags, "--force"]) == 0


def test_card_init_without_a_terminal_names_the_missing_fields(tmp_path, capsys):
    path = _onnx_nhwc_softmax(tmp_path)
    code = main(["card", "init", str(path), "--class-names", "a,b"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1
    assert "cannot infer bounds, modality" in lines[0] and "--bounds LOW,HIGH --modality M" in lines[0]
    assert not (path.parent / "card.json").exists()
    code = main(
        ["card", "init", str(path), "--class-names", "a,b,c", "--bounds", "0,1", "--modality", "skin"]
    )
    assert code == 2 and "lists 3 names but" in capsys.readouterr().err
    code = main(["card", "init", str(path), "--class-names", "a,b", "--bounds", "1,0", "--modality", "skin"])
    assert code == 2 and "'--bounds' option must be two finite numbers" in capsys.readouterr().err


def test_card_init_prompts_on_a_terminal(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medrobust.cli.main import app

    path = _onnx_nhwc_softmax(tmp_path)
    monkeypatch.setattr("medrobust.cli.card._interactive", lambda: True)
    out = tmp_path / "asked.json"
    result = CliRunner().invoke(
        app, ["card", "init", str(path), "--out", str(out)], input="no,yes\n0,255\nskin\n"
    )
    assert result.exit_code == 0, result.output
    card = ModelCard.load(out)
    assert card.class_names == ["no", "yes"] and card.bounds == (0.0, 255.0) and card.modality == "skin"


def test_probe_torchscript_by_trial_of_shapes(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "fixed.ts"
    torch.jit.script(FixedSizeLogits(64).eval()).save(str(path))
    probe = probe_model(path)
    assert probe.fields["input_layout"] == "NCHW" and probe.fields["in_channels"] == 1
    assert probe.fields["spatial_size"] == [64, 64]  # the only tried size the model accepts
    assert probe.fields["outputs"] == "logits" and probe.fields["num_classes"] == 3
    assert not probe.ambiguous


def test_card_init_pt2_and_bundle(tmp_path, capsys):
    from tests.models.test_bring_your_own import _bundle

    torch.manual_seed(0)
    net = FixedSizeLogits(32).eval()
    pt2 = tmp_path / "m.pt2"
    dyn = {"x": {0: torch.export.Dim("batch")}}
    torch.export.save(torch.export.export(net, (torch.rand(2, 1, 32, 32),), dynamic_shapes=dyn), str(pt2))
    assert (
        main(["card", "init", str(pt2), "--class-names", "a,b,c", "--bounds", "0,1", "--modality", "x"]) == 0
    )
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["spatial_size"] == [32, 32] and card["in_channels"] == 1 and card["outputs"] == "logits"
    # a MONAI bundle: class names, bounds and modality come from its metadata; nothing to ask
    root, _ = _bundle(tmp_path)
    assert main(["card", "init", str(root)]) == 0
    card = ModelCard.load(root / "card.json")
    assert card.class_names == ["normal", "pneumonia"] and card.modality == "chest_xray"
    assert card.spatial_size == (32, 32) and card.outputs == "logits"
    assert load_model(root).card.class_names == ["normal", "pneumonia"]  # the bundle's card.json is used
    capsys.readouterr()


def test_card_init_refusals(tmp_path, capsys):
    run = tmp_path / "model.safetensors"
    run.write_bytes(b"")
    assert main(["card", "init", str(run), "--class-names", "a,b", "--bounds", "0,1", "--modality", "x"]) == 2
    assert "already has its card.json" in capsys.readouterr().err
    pt = tmp_path / "w.pt"
    torch.save(FixedSizeLogits().state_dict(), pt)
    assert main(["card", "init", str(pt), "--out", str(tmp_path / "c.json")]) == 2
    assert "torchvision:NAME or timm:NAME with --weights" in capsys.readouterr().err
    assert main(["card", "init", "torchvision:resnet18", "--out", str(tmp_path / "c.json")]) == 2
    assert "needs the weights you will audit (--weights FILE)" in capsys.readouterr().err


@pytest.mark.parametrize("channels", [3])
def test_card_init_torchvision_reads_classes_from_weights(tmp_path, capsys, channels):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    st = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(st))
    out = tmp_path / "card.json"
    argv = ["card", "init", "torchvision:resnet18", "--weights", str(st), "--out", str(out), "--size", "32"]
    assert main([*argv, "--class-names", "a,b,c,d", "--bounds", "0,1", "--modality", "skin"]) == 0
    card = ModelCard.load(out)
    assert card.num_classes == 4 and card.in_channels == channels and card.spatial_size == (32, 32)
    assert card.mean == [0.485, 0.456, 0.406]  # torchvision's recipe, with a note saying so
    assert any("torchvision's" in n for n in card.notes)
    capsys.readouterr()

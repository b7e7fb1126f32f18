import json
import pickle

import pytest
import torch
from torch import nn

from medrobust.errors import CheckpointError, ConfigError
from medrobust.models import MedicalClassifier, ModelCard, build_classifier, load_model, save_checkpoint


def test_run_folder_contents(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"model.safetensors", "card.json", "config.yaml", "environment.json", "metrics.csv"} <= names
    env = json.loads((trained_run / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["seed"] == 0 and env["device"] == "cpu"
    card = ModelCard.load(trained_run / "card.json")
    assert card.arch == "small_cnn" and card.class_names == ["normal", "lesion"]
    assert card.mean is not None and card.std is not None  # normalisation learned from the data
    # no leftover temporary files from the atomic writes
    assert not [n for n in names if n.startswith(".")]


def test_checkpoint_round_trip_identical_logits(trained_run, images, tmp_path):
    model = load_model(trained_run)
    assert isinstance(model, MedicalClassifier) and not model.training
    again = load_model(trained_run / "model.safetensors")
    with torch.no_grad():
        a, b = model(images), again(images)
    assert torch.equal(a, b)
    # save -> load once more: still bit-identical, card preserved
    save_checkpoint(model, tmp_path / "copy")
    copy = load_model(tmp_path / "copy")
    with torch.no_grad():
        assert torch.equal(copy(images), a)
    assert copy.card == model.card
    assert copy.arch_kwargs == {"width": 8}


def test_state_dict_pt_loads_with_weights_only(trained_run, images, tmp_path):
    model = load_model(trained_run)
    path = tmp_path / "weights.pt"
    torch.save(model.backbone.state_dict(), path)  # a bare backbone state dict
    with pytest.raises(CheckpointError, match="needs a model card"):
        load_model(path)
    with pytest.raises(CheckpointError, match="do not match architecture 'small_cnn'"):
        load_model(path, card=model.card)  # default width 16 != trained width 8
    loaded = load_model(path, card=model.card, arch_kwargs={"width": 8})
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("kind", ["module", "payload"])
def test_pickle_payload_is_refused(kind, tmp_path, trained_run):
    marker = tmp_path / "code_ran.txt"
    path = tmp_path / f"{kind}.pt"
    if kind == "module":
        torch.save(nn.Linear(2, 2), path)
    else:
        with open(path, "wb") as fh:
            pickle.dump({"state_dict": _Payload(marker)}, fh)
    card = ModelCard.load(trained_run / "card.json")
    with pytest.raises(CheckpointError) as info:
        load_model(path, card=card)
    msg = str(info.value)
    assert str(path) in msg and "refused" in msg and "unpickling" in msg
    assert not marker.exists()


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "nope.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a medrobust run folder"):
        load_model(tmp_path / "empty")
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported model format"):
        load_model(tmp_path / "model.h5")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        load_model(tmp_path / "bad.safetensors")
    with pytest.raises(ConfigError, match="unexpected option"):
        load_model(tmp_path / "empty", tolerence=1e-3)


def test_save_requires_medical_classifier(tmp_path):
    with pytest.raises(ConfigError, match="MedicalClassifier"):
        save_checkpoint(nn.Linear(2, 2), tmp_path)


def _export_onnx(module, example, path):
    torch.onnx.export(
        module.eval(),
        (example,),
        str(path),
        dynamo=False,
        input_names=["image"],
        output_names=["out"],
        dynamic_axes={"image": {0: "batch"}, "out": {0: "batch"}},
    )


class _ToNHWC(nn.Module):
    """A deployed model that takes channels-last input (as TensorFlow exports do)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.permute(0, 3, 1, 2))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_onnx_import_matches(layout, trained_run, images, tmp_path):
    trained = load_model(trained_run)
    path = tmp_path / f"model_{layout}.onnx"
    if layout == "NCHW":
        _export_onnx(trained, images, path)
    else:
        _export_onnx(_ToNHWC(trained), images.permute(0, 2, 3, 1), path)
    card = trained.card.model_copy(update={"input_layout": layout, "mean": None, "std": None, "notes": []})
    with pytest.raises(CheckpointError, match="needs a model card"):
        load_model(path)
    imported = load_model(path, card=card)
    diff = imported.import_info["max_abs_diff"]
    assert diff <= 1e-4
    assert any("onnxruntime" in n for n in imported.card.notes)
    x = images.clone().requires_grad_(True)
    out = imported(x)  # NCHW image space in, logits out
    with torch.no_grad():
        ref = trained(images)
    assert (out.detach() - ref).abs().max() <= 1e-4
    out.sum().backward()  # differentiable: attacks can take gradients
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_onnx_mismatch_is_refused(trained_run, images, tmp_path, monkeypatch):
    import onnxruntime

    trained = load_model(trained_run)
    path = tmp_path / "m.onnx"
    _export_onnx(trained, images, path)
    real_run = onnxruntime.InferenceSession.run

    def skewed(self, *args, **kwargs):
        return [o + 0.01 for o in real_run(self, *args, **kwargs)]

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", skewed)
    card = trained.card.model_copy(update={"mean": None, "std": None})
    with pytest.raises(CheckpointError, match="disagrees with onnxruntime"):
        load_model(path, card=card)


def test_onnx_wrong_class_count_is_refused(trained_run, images, tmp_path):
    trained = load_model(trained_run)
    path = tmp_path / "m.onnx"
    _export_onnx(trained, images, path)
    card = trained.card.model_copy(update={"class_names": ["a", "b", "c"], "positive_class": None})
    with pytest.raises(CheckpointError, match="3 classes"):
        load_model(path, card=card)


def test_torchscript_import_and_probability_outputs(trained_run, images, tmp_path):
    trained = load_model(trained_run)
    card = trained.card.model_copy(update={"mean": None, "std": None, "notes": []})
    plain = tmp_path / "model.pt"
    torch.jit.trace(trained, images).save(str(plain))
    with pytest.raises(CheckpointError, match=r"TorchScript archive.*rename it to \.ts"):
        load_model(plain, card=card)  # a .pt is weights only; TorchScript must be asked for
    imported = load_model(plain, card=card, format="torchscript")
    assert imported.import_info["format"] == "torchscript"
    with torch.no_grad():
        ref = trained(images)
        assert torch.allclose(imported(images), ref, atol=1e-6)

    probs_path = tmp_path / "probs.ts"
    torch.jit.script(nn.Sequential(trained, nn.Softmax(dim=1))).save(str(probs_path))
    with pytest.raises(CheckpointError, match="needs a model card"):
        load_model(probs_path)
    wrapped = load_model(probs_path, card=card.model_copy(update={"outputs": "probabilities"}))
    with torch.no_grad():
        assert torch.allclose(wrapped(images), torch.log_softmax(ref, dim=1), atol=1e-5)
    assert any("outputs probabilities" in n and "log-probabilities" in n for n in wrapped.card.notes)


def test_card_from_json_path(trained_run, images, tmp_path):
    trained = load_model(trained_run)
    path = tmp_path / "m.onnx"
    _export_onnx(trained, images, path)
    card_path = trained.card.model_copy(update={"mean": None, "std": None}).save(
        tmp_path / "vendor_card.json"
    )
    imported = load_model(path, card=card_path)
    assert imported.card.source == str(path)


def test_onnx_import_of_monai_network_default_opset(tmp_path):
    # torch's exporter routes shared weights through Identity nodes, which onnx2torch alone cannot follow
    card = ModelCard(in_channels=1, class_names=["a", "b"], spatial_size=(32, 32))
    torch.manual_seed(0)
    net = build_classifier("resnet18", card, widen_factor=0.25).eval()
    x = torch.rand(2, 1, 32, 32)
    path = tmp_path / "resnet.onnx"
    _export_onnx(net, x, path)
    imported = load_model(path, card=card)
    assert imported.import_info["max_abs_diff"] <= 1e-4
    with torch.no_grad():
        ref = net(x)
        assert ref.abs().max() > 1e-3  # a meaningful comparison, not two near-zero outputs
        assert (imported(x) - ref).abs().max() <= 1e-4

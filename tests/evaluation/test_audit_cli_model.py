"""The audit CLI on the models and data users bring: phantom specs shared with training, ``--weights``."""

from __future__ import annotations

import json

import pytest

from medrobust.cli.main import main
from medrobust.data.specs import phantom_npz_path


@pytest.fixture
def phantom_cache(tmp_path, monkeypatch):
    """Phantom sets generated under ``tmp_path`` (``$MEDROBUST_CACHE``), never in the working folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDROBUST_CACHE", str(cache))
    return cache / "phantoms"


def test_audit_of_a_model_trained_on_phantom_spec_data(tmp_path, phantom_cache, capsys):
    """train classifier --data phantom:... names classes normal/pneumonia; the audit's phantom data agree."""
    clf = tmp_path / "clf"
    train = ["train", "classifier", "--data", "phantom:chest_xray?n=40&size=32", "--modality", "chest_xray"]
    train += ["--arch", "small_cnn", "--size", "32", "--epochs", "1", "--out", str(clf), "--device", "cpu"]
    assert main([*train, "--no-progress"]) == 0
    card = json.loads((clf / "card.json").read_text())
    assert card["class_names"] == ["normal", "pneumonia"]

    out = tmp_path / "audit"
    argv = ["audit", "--model", str(clf), "--data", "phantom:chest_xray@32?n=40", "--attacks", "fgsm"]
    argv += ["--eps", "2/255", "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert [c["attack"] for c in results["cells"]] == ["fgsm"]
    data = results["data"]
    assert set(data["class_counts"]) == {"normal", "pneumonia"} and data["n"] == 6  # the test split
    # the same spec names the same file in training and in the audit
    npz = phantom_npz_path("chest_xray", 40, 32, 0, phantom_cache)
    assert data["source"] == str(npz) and npz.is_file()
    assert len(list(phantom_cache.iterdir())) == 1


def test_phantom_block_and_spec_open_the_same_file_and_classes(tmp_path, phantom_cache):
    from types import SimpleNamespace

    from medrobust.data import open_source
    from medrobust.evaluation.targets import open_configured_source

    block = SimpleNamespace(modality="skin", n=24, size=32, seed=1, cache_dir=None)
    source, path = open_configured_source(SimpleNamespace(source=None, phantom=block, kind=None))
    spec = open_source("phantom:skin@32?n=24&seed=1")
    assert source.class_names == spec.class_names and source.class_names[0] != "0"
    assert str(path) == str(spec.root) and source.spec == spec.spec == "phantom:skin?n=24&size=32&seed=1"
    # an explicit cache folder is honoured (the same file name under it)
    own = SimpleNamespace(**{**vars(block), "cache_dir": tmp_path / "own"})
    _, other = open_configured_source(SimpleNamespace(source=None, phantom=own, kind=None))
    assert other == phantom_npz_path("skin", 24, 32, 1, tmp_path / "own") and other.is_file()


def _grey_rgb_card(path) -> str:
    card = {
        "in_channels": 3,
        "channels": "replicate",  # grey phantoms into an RGB network
        "class_names": ["normal", "pneumonia"],
        "spatial_size": [32, 32],
        "modality": "chest_xray",
        "bounds": [0.0, 1.0],
    }
    path.write_text(json.dumps(card))
    return str(path)


def test_audit_torchvision_name_with_local_weights(tmp_path, phantom_cache, capsys):
    import torchvision
    from safetensors.torch import save_file

    weights = tmp_path / "r18.safetensors"
    torch_net = torchvision.models.resnet18(weights=None, num_classes=2)
    save_file(torch_net.state_dict(), str(weights))
    card = _grey_rgb_card(tmp_path / "card.json")
    out = tmp_path / "audit"
    argv = ["audit", "--model", "torchvision:resnet18", "--weights", str(weights), "--card", card]
    argv += ["--data", "phantom:chest_xray@32?n=40", "--split", "all", "--attacks", "fgsm", "--eps", "2/255"]
    argv += ["-n", "4", "--batch-size", "4", "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    imported = results["model"]["import"]
    assert imported["format"] == "torchvision" and "local weights" in imported["converter"]
    assert imported["source"] == f"torchvision:resnet18 with weights {weights.resolve()}"
    assert "repeated to 3 channels" in imported["channels"]
    assert results["data"]["n"] == 4 and [c["attack"] for c in results["cells"]] == ["fgsm"]

    # the weights of a library model; a run folder or file carries its own
    capsys.readouterr()
    argv[argv.index("torchvision:resnet18")] = str(tmp_path / "card.json")
    assert main([*argv, "--fresh"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "'weights' applies to torchvision:NAME and timm:NAME" in err[0]


def test_load_classifier_reads_model_format(tmp_path):
    """model.format reads a TorchScript program saved as .pt, which by its suffix is refused."""
    from types import SimpleNamespace

    import torch

    from medrobust.errors import CheckpointError
    from medrobust.evaluation.targets import load_classifier

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], 1)

    path = tmp_path / "model.pt"
    torch.jit.script(Net()).save(str(path))
    card = _grey_rgb_card(tmp_path / "card.json")

    def config(fmt):
        return SimpleNamespace(model=SimpleNamespace(path=path, card=card, weights=None, format=fmt))

    with pytest.raises(CheckpointError, match="TorchScript archive"):
        load_classifier(config(None), torch.device("cpu"))
    model = load_classifier(config("torchscript"), torch.device("cpu"))
    assert model.import_info["format"] == "torchscript" and not model.training
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(model(x)[:, 0], x.mean(dim=(1, 2, 3)))


# -- preset options from the card and the audit config ---------------------------------------------
def _rgb_npz(path):
    """A MedMNIST-style RGB npz (tinted 'brain MRI' exports: the three channels differ)."""
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 4), ("val", 4), ("test", 8)):
        grey = rng.integers(20, 230, size=(n, 16, 16)).astype(np.float32)
        arrays[f"{split}_images"] = np.stack([grey, grey * 0.5, grey * 0.25], -1).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def _rgb_run(tmp_path, **card_extra):
    import torch

    from medrobust.models import ModelCard, build_classifier, save_checkpoint

    card = ModelCard(
        in_channels=3, class_names=["0", "1"], spatial_size=(16, 16), modality="brain_mri", **card_extra
    )
    torch.manual_seed(0)
    return save_checkpoint(build_classifier("small_cnn", card, width=4, depth=2).eval(), tmp_path / "rgb")


def test_card_preset_options_tell_the_brain_mri_preset_the_data_are_rgb(tmp_path, capsys):
    data = _rgb_npz(tmp_path / "rgb.npz")
    argv = ["--data", str(data), "--modality", "brain_mri", "--attacks", "fgsm", "--eps", "2/255"]
    argv += ["-n", "4", "--device", "cpu", "--no-progress"]
    plain = _rgb_run(tmp_path / "plain")
    assert main(["audit", "--model", str(plain), *argv, "--out", str(tmp_path / "a")]) == 2
    assert "images have 1 channel(s); the model card expects 3" in capsys.readouterr().err

    told = _rgb_run(tmp_path / "told", preset_options={"channels": 3})
    out = tmp_path / "b"
    assert main(["audit", "--model", str(told), *argv, "--out", str(out)]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["preset_options"] == {"channels": 3} and results["data"]["n"] == 4


def test_preset_options_card_then_config(tmp_path):
    """Scaling from the card; data.preset_options override it (a whole scaling at a time)."""
    from types import SimpleNamespace

    import numpy as np

    from medrobust.errors import ConfigError
    from medrobust.evaluation.config import config_from_dict
    from medrobust.evaluation.targets import audit_preset_options, load_audit_data
    from medrobust.models import ModelCard

    card = ModelCard(
        in_channels=3,
        class_names=["0", "1"],
        spatial_size=(16, 16),
        preset_options={"channels": 3, "scaling": "range", "value_range": [0, 255]},
    )
    data = _rgb_npz(tmp_path / "rgb.npz")
    cfg = {"data": {"source": str(data), "preset": "brain_mri"}, "model": {"path": str(tmp_path)}}
    cfg.update(attacks=["fgsm"], budgets={"linf": [0.01]}, n_samples=8)
    loaded = load_audit_data(config_from_dict(cfg), card)
    with np.load(data) as z:
        raw = z["test_images"].transpose(0, 3, 1, 2).astype(np.float32)
    np.testing.assert_allclose(
        loaded.images.numpy(), raw[loaded.indices] / 255.0, atol=1e-6
    )  # no percentiles

    spec = SimpleNamespace(preset_options={"percentiles": [2, 98]})
    assert audit_preset_options(spec, card) == {
        "channels": 3,
        "scaling": "percentile",
        "percentiles": [2.0, 98.0],
    }
    assert audit_preset_options(SimpleNamespace(preset_options={"channels": 1}), card)["value_range"] == [
        0,
        255,
    ]
    assert audit_preset_options(SimpleNamespace(), card) == card.preset_options
    with pytest.raises(ConfigError, match=r"data\.preset_options.*'sclaing'.*Did you mean 'scaling'"):
        audit_preset_options(SimpleNamespace(preset_options={"sclaing": "range"}), card)
    with pytest.raises(ConfigError, match=r"data\.size"):
        audit_preset_options(SimpleNamespace(preset_options={"spatial_size": 32}), card)


def test_model_format_flag_reads_a_torchscript_program_named_pt(tmp_path, capsys):
    """--model-format torchscript audits a program saved as model.pt; without it the file is refused."""
    import numpy as np
    import torch

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([m - 0.5, 0.5 - m], 1)

    path = tmp_path / "model.pt"
    torch.jit.script(Net()).save(str(path))
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"in_channels": 1, "class_names": ["0", "1"], "spatial_size": [32, 32]}))
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 4), ("val", 4), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, 32, 32)).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    data = tmp_path / "grey.npz"
    np.savez(data, **arrays)
    argv = [
        "audit",
        "--model",
        str(path),
        "--card",
        str(card),
        "--data",
        str(data),
        "--modality",
        "chest_xray",
    ]
    argv += ["--attacks", "fgsm", "--eps", "2/255", "--device", "cpu", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
    assert "TorchScript archive" in capsys.readouterr().err
    out = tmp_path / "read"
    assert main([*argv, "--model-format", "torchscript", "--out", str(out)]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["model"]["format"] == "torchscript"
    assert [c["attack"] for c in results["cells"]] == ["fgsm"]


def test_unknown_model_format_and_preset_option_name_the_field(tmp_path):
    from medrobust.errors import ConfigError
    from medrobust.evaluation.config import config_from_dict

    base = {
        "data": {"source": str(tmp_path), "preset": "brain_mri"},
        "attacks": ["fgsm"],
        "budgets": {"linf": ["2/255"]},
    }
    with pytest.raises(ConfigError, match=r"model\.format"):
        config_from_dict({**base, "model": {"path": str(tmp_path), "format": "pickle"}})
    bad = {**base, "data": {**base["data"], "preset_options": {"chanels": 3}}}
    with pytest.raises(ConfigError, match="preset_options"):
        config_from_dict({**bad, "model": {"path": str(tmp_path)}})
    ok = {**base, "data": {**base["data"], "preset_options": {"channels": 3}}}
    assert config_from_dict({**ok, "model": {"path": str(tmp_path)}}).data.preset_options == {"channels": 3}

"""Bring your own model: .pt2 programs, torchvision/timm names with local weights, MONAI bundles, channels."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from medrobust.errors import CheckpointError, ConfigError
from medrobust.models import ModelCard, load_model
from medrobust.models.channels import ReplicatingClassifier


class TinyNet(nn.Module):
    """A small NCHW conv net returning logits."""

    def __init__(self, in_channels: int = 1, classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _card(**kw) -> ModelCard:
    values = {"in_channels": 1, "class_names": ["a", "b"], "spatial_size": (16, 16), **kw}
    return ModelCard.model_validate(values)


# -- card: channels --------------------------------------------------------------------------------
def test_replicate_card_reads_network_channels():
    card = ModelCard(
        in_channels=3, class_names=["a", "b"], channels="replicate", mean=[0.5] * 3, std=[0.2] * 3
    )
    assert (card.in_channels, card.model_channels, card.network_channels) == (1, 3, 3)
    net = card.network_card()
    assert (net.in_channels, net.channels, net.model_channels) == (3, "as_is", None)
    again = ModelCard.model_validate_json(card.model_dump_json())  # the dumped card reads back the same
    assert again == card
    assert ModelCard(in_channels=1, class_names=["a", "b"], channels="replicate").model_channels == 3
    with pytest.raises(CheckpointError, match="model_channels"):
        ModelCard.from_mapping({"in_channels": 1, "class_names": ["a", "b"], "model_channels": 3})
    with pytest.raises(CheckpointError, match=r"in_channels .* must be 1"):
        ModelCard.from_mapping(
            {"in_channels": 2, "class_names": ["a", "b"], "channels": "replicate", "model_channels": 3}
        )
    with pytest.raises(CheckpointError, match="mean must have"):
        ModelCard.from_mapping({"in_channels": 1, "class_names": ["a", "b"], "mean": [0.1, 0.2]})


def test_replicating_classifier_feeds_grey_images_to_an_rgb_network(tmp_path):
    torch.manual_seed(0)
    net = TinyNet(3).eval()
    path = tmp_path / "rgb.ts"
    torch.jit.script(net).save(str(path))
    card = _card(in_channels=3, channels="replicate")
    model = load_model(path, card=card)
    assert isinstance(model, ReplicatingClassifier)
    assert model.card.in_channels == 1 and model.card.model_channels == 3
    assert any("repeated into the network's 3 channels" in n for n in model.card.notes)
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    out = model(x)
    with torch.no_grad():
        assert torch.allclose(out, net(x.repeat(1, 3, 1, 1)), atol=1e-6)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == (2, 1, 16, 16) and x.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="Got images with 2 channels"):
        model(torch.rand(1, 2, 16, 16))


# -- .pt2 ------------------------------------------------------------------------------------------
def _export(net: nn.Module, path, dynamic: bool = True, shape=(2, 1, 16, 16)) -> None:
    x = torch.rand(*shape)
    dyn = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(net.eval(), (x,), dynamic_shapes=dyn), str(path))


class _Named(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_pt2_round_trip_identical_logits(tmp_path):
    torch.manual_seed(0)
    net = _Named(TinyNet(1)).eval()
    path = tmp_path / "model.pt2"
    _export(net, path)
    with pytest.raises(CheckpointError, match="needs a model card"):
        load_model(path)
    model = load_model(path, card=_card())
    assert model.import_info["format"] == "pt2"
    model.train()  # the exported program refuses train()/eval(); the wrapper does not pass them on
    model.eval()
    for n in (1, 3, 5):  # any batch size, including 1
        x = torch.rand(n, 1, 16, 16)
        with torch.no_grad():
            assert torch.equal(model(x), net(x))
    x = torch.rand(3, 1, 16, 16, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # attacks can take gradients
    # a .pt2 is a program: only by suffix or format, never as weights
    renamed = tmp_path / "model.pt"
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match=str(renamed)):
        load_model(renamed, card=_card())
    assert load_model(renamed, card=_card(), format="pt2").import_info["format"] == "pt2"


class _WithConstant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * torch.tensor([1.0, 2.0])  # exported as a lifted constant, not a buffer


def test_pt2_constants_move_with_the_model(tmp_path):
    path = tmp_path / "const.pt2"
    _export(_WithConstant(), path)
    model = load_model(path, card=_card())
    program = model.backbone.module.program
    constants = [k for k, v in vars(program).items() if isinstance(v, torch.Tensor)]
    assert constants  # the case this guards: a tensor attribute that is neither parameter nor buffer
    model.to("meta")
    assert all(getattr(program, k).device.type == "meta" for k in constants)
    assert all(p.device.type == "meta" for p in model.parameters())


def test_pt2_fixed_batch_and_misfit_card_are_refused(tmp_path):
    path = tmp_path / "fixed.pt2"
    _export(_Named(TinyNet(1)), path, dynamic=False)
    with pytest.raises(CheckpointError, match=r"fixed batch size of 2.*Dim\('batch'\)"):
        load_model(path, card=_card())
    ok = tmp_path / "ok.pt2"
    _export(_Named(TinyNet(1)), ok)
    with pytest.raises(CheckpointError, match=r"torch.export model failed on a \(2, 3, 16, 16\) sample"):
        load_model(ok, card=_card(in_channels=3))
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    with pytest.raises(CheckpointError, match=r"not a torch.export \(.pt2\) archive \(not a readable zip"):
        load_model(tmp_path / "junk.pt2", card=_card())
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.pt2", "w") as zf:
        zf.writestr("notes.txt", "a zip, but no program")
    with pytest.raises(
        CheckpointError, match=r"other.pt2: not a loadable torch.export \(.pt2\) file: file in archive"
    ):
        load_model(tmp_path / "other.pt2", card=_card())


# -- torchvision / timm ------------------------------------------------------------------------------
def test_torchvision_name_with_local_weights(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    st = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(st))
    pt = tmp_path / "r18.pth"
    torch.save({"state_dict": ref.state_dict()}, pt)
    card = _card(in_channels=3, spatial_size=(32, 32))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = ref(x)
    for weights in (st, pt):
        model = load_model("torchvision:resnet18", card=card, weights=weights)
        assert model.import_info == {"format": "torchvision", "name": "resnet18", "weights": str(weights)}
        with torch.no_grad():
            assert torch.equal(model(x), want)
    with pytest.raises(CheckpointError, match=r"needs local weights.*never downloaded"):
        load_model("torchvision:resnet18", card=card)
    with pytest.raises(CheckpointError, match="needs a model card"):
        load_model("torchvision:resnet18", weights=st)
    with pytest.raises(CheckpointError, match="Did you mean 'resnet18'"):
        load_model("torchvision:resnet81", card=card, weights=st)
    with pytest.raises(CheckpointError, match=r"take 3-channel images.*replicate"):
        load_model("torchvision:resnet18", card=_card(), weights=st)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model("torchvision:resnet34", card=card, weights=st)
    with pytest.raises(CheckpointError, match=r"'tourchvision:' is not a model library. Did you mean"):
        load_model("tourchvision:resnet18", card=card, weights=st)
    with pytest.raises(ConfigError, match="'weights' option of load_model applies to torchvision"):
        load_model(st, card=card, weights=st)
    # grey data into the RGB network
    grey_card = _card(in_channels=3, channels="replicate", spatial_size=(32, 32))
    rep = load_model("torchvision:resnet18", card=grey_card, weights=st)
    with torch.no_grad():
        g = torch.rand(2, 1, 32, 32)
        assert torch.equal(rep(g), ref(g.repeat(1, 3, 1, 1)))


def test_no_downloads_guard_refuses_fetching():
    import torch.hub

    from medrobust.models.hub import no_downloads

    original = torch.hub.load_state_dict_from_url
    with no_downloads("torchvision:resnet18"), pytest.raises(CheckpointError, match="never downloads"):
        torch.hub.load_state_dict_from_url("https://example.invalid/w.pth")
    assert torch.hub.load_state_dict_from_url is original


def test_timm_without_the_package_says_install_it(tmp_path):
    pytest.importorskip("torchvision")
    try:
        import timm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("timm is installed here")
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"timm package, which is not installed: pip install timm"):
        load_model("timm:resnet18", card=_card(in_channels=3), weights=tmp_path / "w.safetensors")


def test_model_config_accepts_library_names_and_weights(tmp_path):
    from medrobust.evaluation.config import _MODEL_SPEC_RE, ModelConfig
    from medrobust.models.hub import MODEL_SCHEMES

    assert set(re.findall(r"\w+", _MODEL_SPEC_RE.pattern.split(":")[0])) == set(MODEL_SCHEMES)
    w = tmp_path / "w.safetensors"
    w.write_bytes(b"x")
    cfg = ModelConfig.model_validate({"path": "torchvision:resnet18", "weights": str(w)})
    assert str(cfg.path) == "torchvision:resnet18" and cfg.weights == w.resolve()
    with pytest.raises(ValueError, match="model weights not found"):
        ModelConfig.model_validate({"path": "torchvision:resnet18", "weights": str(tmp_path / "nope.pt")})
    with pytest.raises(ValueError, match="'weights' applies to torchvision:NAME"):
        ModelConfig.model_validate({"path": str(w), "weights": str(w)})


# -- MONAI bundles ------------------------------------------------------------------------------------
def _bundle(tmp_path, metadata_extra=None, network_def=None):
    from monai.networks.nets import Classifier

    root = tmp_path / "cxr_bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    meta = {
        "name": "tiny",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "chest_xray",
                    "num_channels": 1,
                    "spatial_shape": [32, 32],
                    "value_range": [0, 1],
                }
            },
            "outputs": {
                "pred": {
                    "type": "probabilities",
                    "num_channels": 2,
                    "channel_def": {"1": "pneumonia", "0": "normal"},
                }
            },
        },
        **(metadata_extra or {}),
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    net_def = network_def or {
        "_target_": "Classifier",
        "in_shape": [1, 32, 32],
        "classes": "@num_classes",
        "channels": [4, 8],
        "strides": [2, 2],
    }
    (root / "configs" / "inference.json").write_text(json.dumps({"num_classes": 2, "network_def": net_def}))
    torch.manual_seed(0)
    net = Classifier(in_shape=[1, 32, 32], classes=2, channels=[4, 8], strides=[2, 2]).eval()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root, net


def test_monai_bundle_loads_with_card_from_metadata(tmp_path):
    root, net = _bundle(tmp_path)
    model = load_model(root)
    card = model.card
    assert card.class_names == ["normal", "pneumonia"] and card.in_channels == 1
    assert card.spatial_size == (32, 32) and card.bounds == (0.0, 1.0) and card.modality == "chest_xray"
    assert model.import_info == {"format": "monai_bundle", "network": "Classifier"}
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))


def test_monai_bundle_network_def_runs_no_code(tmp_path):
    root, _ = _bundle(
        tmp_path, network_def={"_target_": "Classifier", "in_shape": "$__import__('os').getcwd()"}
    )
    with pytest.raises(CheckpointError, match=r"network_def entry 'network_def.in_shape' is .*expression"):
        load_model(root)
    root2, _ = _bundle(tmp_path / "b", network_def={"_target_": "builtins.eval", "source": "1"})
    with pytest.raises(CheckpointError, match=r"not a network of monai.networks.nets"):
        load_model(root2)
    root3, _ = _bundle(tmp_path / "c", metadata_extra={"network_data_format": {"inputs": {}, "outputs": {}}})
    with pytest.raises(CheckpointError, match=r"metadata do not state class_names or bounds.*card init"):
        load_model(root3)

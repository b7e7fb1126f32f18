"""Loading hostile model files: code in weights files, broken imports, non-finite and oversized weights."""

from __future__ import annotations

import json
import time
import zipfile

import pytest
import torch
from torch import nn

from medrobust.errors import CheckpointError, ConfigError
from medrobust.models import ModelCard, build_classifier, load_model, save_checkpoint
from medrobust.models.registry import MAX_PARAMETERS, check_arch_kwargs, count_parameters, create_classifier

CARD = ModelCard(
    in_channels=1,
    class_names=["normal", "pneumonia"],
    spatial_size=(16, 16),
    bounds=(0.0, 1.0),
    modality="chest_xray",
)


class MarkerOnLoadAndRun(nn.Module):
    """A TorchScript "model" that creates files: one when loaded (``__setstate__``), one when run."""

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
    """A plain NCHW conv net (for card/layout mismatches)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


class ReturnsInts(nn.Module):
    def forward(self, x: torch.Tensor) -> list[int]:
        return [1, 2]


class ReturnsNaN(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2] * float("nan")


def _script(module: nn.Module, path):
    torch.jit.script(module).save(str(path))
    return path


def _run_folder(tmp_path, name="run", **kw):
    torch.manual_seed(0)
    model = build_classifier("small_cnn", CARD, width=2, depth=1, **kw)
    return save_checkpoint(model.eval(), tmp_path / name)


def _rewrite_safetensors(path, edit_state=None, metadata=None):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
    state = load_file(str(path))
    if edit_state is not None:
        edit_state(state)
    meta.update(metadata or {})
    save_file(state, str(path), metadata=meta)


# -- 1. code in a "weights" file ---------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt", ".pkl"])
def test_torchscript_under_weights_suffix_never_runs(tmp_path, suffix):
    run = tmp_path / "run"
    run.mkdir()
    CARD.save(run / "card.json")
    marker = tmp_path / "code_ran"
    path = _script(MarkerOnLoadAndRun(str(marker)), run / f"model{suffix}")
    for card in (run / "card.json", None):
        with pytest.raises(CheckpointError) as info:
            load_model(path, card=card)
        msg = str(info.value)
        assert str(path) in msg and "TorchScript" in msg and "rename it to .ts" in msg
        assert "format='torchscript'" in msg and "executes its code" in msg
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        load_model(path, card=CARD, format="state_dict")
    assert not marker.exists() and not (tmp_path / "code_ran.load").exists()


def test_the_marker_model_does_run_when_asked_for(tmp_path):
    # proves the test above would notice: the same archive, explicitly opted in, creates both files
    marker = tmp_path / "code_ran"
    path = _script(MarkerOnLoadAndRun(str(marker)), tmp_path / "model.pt")
    load_model(path, card=CARD, format="torchscript")
    assert (tmp_path / "code_ran.load").exists() and marker.exists()
    renamed = path.rename(tmp_path / "model.ts")
    marker.unlink()
    load_model(renamed, card=CARD)  # by suffix
    assert marker.exists()


def test_format_parameter(tmp_path):
    run = _run_folder(tmp_path)
    with pytest.raises(ConfigError, match="Did you mean 'torchscript'"):
        load_model(run / "model.safetensors", format="torchscipt")
    with pytest.raises(ConfigError, match=r"'format' parameter of load_model is 'onnx', but .* is a folder"):
        load_model(run, format="onnx")
    with pytest.raises(ConfigError, match="'format' parameter of load_model must be a string"):
        load_model(run, format=3)
    assert load_model(run, format="safetensors").import_info["format"] == "medrobust"
    # a state dict under any name, read as such on request
    state_path = tmp_path / "weights.anything"
    torch.save(load_model(run).state_dict(), state_path)
    with pytest.raises(CheckpointError, match=r"unsupported model format '\.anything'.*format="):
        load_model(state_path, card=run / "card.json")
    model = load_model(
        state_path, card=run / "card.json", format="state-dict", arch_kwargs={"width": 2, "depth": 1}
    )
    assert model.import_info["format"] == "state_dict"
    # safetensors bytes under .pt are not sniffed either: read as torch.load -> refused cleanly
    pt = tmp_path / "really_safetensors.pt"
    pt.write_bytes((run / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_model(pt, card=run / "card.json")


def test_run_folder_without_safetensors_names_the_model_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    CARD.save(run / "card.json")
    (run / "model.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"no model\.safetensors inside\); it holds \['model\.pt'\]"):
        load_model(run)


def test_import_options_are_validated(tmp_path):
    run = _run_folder(tmp_path)
    with pytest.raises(ConfigError, match="'n_check' parameter of load_model"):
        load_model(run, n_check=0)
    with pytest.raises(ConfigError, match="'tolerance' parameter of load_model must be finite"):
        load_model(run, tolerance=float("nan"))
    with pytest.raises(ConfigError, match="Did you mean 'tolerance'"):
        load_model(run, tolerence=1e-3)


# -- 2. TorchScript models that do not fit their card -----------------------------------------------
def test_torchscript_layout_mismatch_names_file_card_and_error(tmp_path):
    path = _script(ChannelsFirstNet(), tmp_path / "net.ts")
    card = CARD.model_copy(update={"input_layout": "NHWC"})
    with pytest.raises(CheckpointError) as info:
        load_model(path, card=card)
    msg = str(info.value)
    assert str(path) in msg and "input_layout 'NHWC'" in msg and "(2, 16, 16, 1)" in msg
    assert "channels" in msg and "Traceback" not in msg and "\n" not in msg
    assert load_model(path, card=CARD).import_info["format"] == "torchscript"  # NCHW is fine


def test_torchscript_wrong_outputs(tmp_path):
    three = CARD.model_copy(update={"class_names": ["a", "b", "c"]})
    net = _script(ChannelsFirstNet(), tmp_path / "net.ts")
    with pytest.raises(CheckpointError, match=r"returns shape \(2, 2\) but the card lists 3 classes"):
        load_model(net, card=three)
    ints = _script(ReturnsInts(), tmp_path / "ints.ts")
    with pytest.raises(
        CheckpointError, match=r"ints\.ts: on a \(2, 1, 16, 16\) sample .* returned an int \(1\)"
    ):
        load_model(ints, card=CARD)
    nan = _script(ReturnsNaN(), tmp_path / "nan.ts")
    with pytest.raises(CheckpointError, match="non-finite outputs"):
        load_model(nan, card=CARD)
    garbage = tmp_path / "garbage.ts"
    garbage.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError, match="not a loadable TorchScript file"):
        load_model(garbage, card=CARD)


# -- 4. non-finite weights ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_safetensors_weights_are_refused(tmp_path, value):
    run = _run_folder(tmp_path)

    def poison(state):
        key = sorted(k for k in state if k.endswith("weight"))[0]
        state[key].view(-1)[3] = value

    _rewrite_safetensors(run / "model.safetensors", poison)
    with pytest.raises(CheckpointError) as info:
        load_model(run)
    msg = str(info.value)
    kind = "NaN" if value != value else "inf"
    assert "model.safetensors" in msg and f"1 {kind}" in msg and "backbone.features.0.weight" in msg


def test_non_finite_state_dict_is_refused(tmp_path):
    run = _run_folder(tmp_path)
    state = load_model(run).state_dict()
    state["backbone.head.bias"] = torch.tensor([0.0, float("-inf")])
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"weights\.pth: .*'backbone\.head\.bias' \(2,\) has 1 inf"):
        load_model(path, card=run / "card.json", arch_kwargs={"width": 2, "depth": 1})


def test_non_finite_denoiser_weights_are_refused(tmp_path):
    from medrobust.defenses import create_denoiser, load_denoiser
    from medrobust.defenses.checkpoint import save_denoiser

    den = create_denoiser("dncnn", in_channels=1, bounds=(0, 1), depth=3, width=4)
    run = save_denoiser(den, tmp_path / "den")
    assert load_denoiser(run) is not None

    def poison(state):
        key = sorted(state)[0]
        state[key].view(-1)[0] = float("nan")

    _rewrite_safetensors(run / "denoiser.safetensors", poison)
    with pytest.raises(CheckpointError, match=r"denoiser\.safetensors: the denoiser weights hold non-finite"):
        load_denoiser(run)


def test_hostile_denoiser_specs(tmp_path, monkeypatch):
    from medrobust.defenses import create_denoiser, load_denoiser
    from medrobust.defenses.checkpoint import save_denoiser
    from medrobust.models import registry

    run = save_denoiser(
        create_denoiser("dncnn", in_channels=1, bounds=(0, 1), depth=3, width=4), tmp_path / "d"
    )
    spec = json.loads((run / "denoiser.json").read_text())
    (run / "denoiser.json").write_text(json.dumps({**spec, "params": {**spec["params"], "width": 10**6}}))
    with pytest.raises(
        CheckpointError, match=r"denoiser\.json: cannot rebuild denoiser 'dncnn': The 'width'"
    ):
        load_denoiser(run)
    # the size check runs on the meta device before the real build (registered denoisers cap their
    # own sizes; the check is what stops a plug-in without caps)
    (run / "denoiser.json").write_text(json.dumps(spec))
    monkeypatch.setattr(registry, "MAX_PARAMETERS", 100)
    with pytest.raises(
        CheckpointError, match=r"denoiser\.json: denoiser 'dncnn' with these params would have"
    ):
        load_denoiser(run)
    monkeypatch.undo()
    (run / "denoiser.json").write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(CheckpointError, match=r"denoiser\.json: the denoiser spec must be UTF-8"):
        load_denoiser(run)
    (run / "denoiser.json").unlink()
    (run / "denoiser.json").mkdir()
    with pytest.raises(CheckpointError, match=r"denoiser\.json: the denoiser spec must be a JSON file"):
        load_denoiser(run)


# -- 5. architecture keyword arguments from files --------------------------------------------------------
@pytest.mark.parametrize(
    ("meta", "pattern"),
    [
        ({"arch_kwargs": "[8, 2]"}, "'arch_kwargs' parameter of classifier 'small_cnn' must be a mapping"),
        ({"arch_kwargs": '{"width": 200000}'}, r"parameters; at most 2e\+09 .*MAX_PARAMETERS"),
        ({"arch_kwargs": '{"widht": 2}'}, "no parameter 'widht'. Did you mean 'width'"),
        ({"arch_kwargs": '{"width": "2"}'}, "'width' parameter of classifier 'small_cnn' must be int"),
        ({"arch_kwargs": '{"width": true}'}, "must be int. Got True"),
        ({"arch_kwargs": "{not json"}, "malformed arch_kwargs metadata"),
        ({"arch": "small_cn"}, "Did you mean 'small_cnn'"),
    ],
)
def test_arch_kwargs_from_metadata_are_validated(tmp_path, meta, pattern):
    run = _run_folder(tmp_path)
    _rewrite_safetensors(run / "model.safetensors", metadata=meta)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_model(run)
    assert "model.safetensors" in str(info.value)
    assert time.perf_counter() - t0 < 5  # nothing of the 2.88 TB network is allocated


def test_registry_checks_kwargs_and_size():
    with pytest.raises(ConfigError, match="must be a mapping"):
        check_arch_kwargs("small_cnn", [1, 2])
    with pytest.raises(ConfigError, match="'dropout' parameter of classifier 'small_cnn' must be float"):
        check_arch_kwargs("small_cnn", {"dropout": float("nan")})
    with pytest.raises(ConfigError, match="'no_max_pool' parameter of classifier 'resnet18' must be bool"):
        check_arch_kwargs("resnet18", {"no_max_pool": "yes"})
    assert check_arch_kwargs("resnet18", {"widen_factor": 1}) == {"widen_factor": 1}  # int for float is fine
    with pytest.raises(ConfigError, match=r"2e\+09"):
        create_classifier("small_cnn", 1, 2, width=200_000)
    with pytest.raises(ConfigError, match=r"densenet121.*at most 2e\+09"):
        create_classifier("densenet121", 1, 2, init_features=10**6)
    with pytest.raises(ConfigError, match="'num_classes' parameter"):
        create_classifier("small_cnn", 1, 10**7)
    real = create_classifier("small_cnn", 3, 5, width=4)
    n_real = sum(p.numel() for p in real.parameters()) + sum(b.numel() for b in real.buffers())
    assert count_parameters("small_cnn", 3, 5, width=4) == n_real
    assert MAX_PARAMETERS == 2_000_000_000


def test_weights_that_do_not_fit_name_the_tensor(tmp_path):
    run = _run_folder(tmp_path)
    state = load_model(run).state_dict()
    state["backbone.head.weight"] = torch.zeros(2, 3)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(
        CheckpointError, match=r"'backbone\.head\.weight' is \(2, 3\) in the file but \(2, 2\)"
    ):
        load_model(path, card=run / "card.json", arch_kwargs={"width": 2, "depth": 1})


def test_compressed_zip_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\0" * (32 * 2**20))
    assert path.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match=r"bomb\.pt: the archive declares 33554432 bytes"):
        load_model(path, card=CARD)


def test_onnx_external_data_outside_the_folder_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 16)
    weight = TensorProto()
    weight.name = "w"
    weight.data_type = TensorProto.FLOAT
    weight.dims.extend([4])
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[weight],
    )
    model_dir = tmp_path / "vendor"
    model_dir.mkdir()
    path = model_dir / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(
        CheckpointError, match=r"model\.onnx: tensor 'w' keeps its data in '\.\./secret\.bin'"
    ):
        load_model(path, card=CARD)

"""Model cards read from hostile card.json files, and the bounds-vs-data check for the audit."""

from __future__ import annotations

import json

import pytest

from medrobust.errors import CheckpointError
from medrobust.limits import MAX_CLASSES
from medrobust.models import ModelCard, load_model
from medrobust.models.card import MAX_CARD_BYTES, check_bounds_against_data

GOOD = {
    "in_channels": 1,
    "class_names": ["normal", "pneumonia"],
    "spatial_size": [32, 32],
    "bounds": [0.0, 1.0],
}


def _write(tmp_path, values=None, raw: bytes | None = None):
    path = tmp_path / "card.json"
    path.write_bytes(raw if raw is not None else json.dumps(values).encode())
    return path


def _refused(path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as info:
        ModelCard.load(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def test_good_card_loads(tmp_path):
    card = ModelCard.load(_write(tmp_path, GOOD))
    assert card.num_classes == 2 and card.spatial_size == (32, 32)
    # num_classes may be stated; it is checked, not stored
    card = ModelCard.load(_write(tmp_path, {**GOOD, "num_classes": 2}))
    assert "num_classes" not in card.model_dump()


def test_card_file_shapes(tmp_path):
    folder = tmp_path / "card.json"
    folder.mkdir()
    _refused(folder, "folder")
    folder.rmdir()
    _refused(
        _write(tmp_path, raw='{"in_channels": 1, "modality": "r\xe9sum\xe9"}'.encode("latin-1")), "UTF-8"
    )
    _refused(_write(tmp_path, raw=b'{"in_channels": 1,'), "not valid JSON", "line 1")
    _refused(_write(tmp_path, [GOOD]), "JSON object", "list")
    _refused(_write(tmp_path, "card"), "JSON object", "str")
    _refused(_write(tmp_path, raw=b"[" * 100_000 + b"]" * 100_000), "nested too deeply")
    _refused(_write(tmp_path, raw=b" " * (MAX_CARD_BYTES + 1)), "bytes")
    _refused(tmp_path / "missing.json", "not found")


@pytest.mark.parametrize(
    ("update", "fragment"),
    [
        ({"spatial_size": [-32, 32]}, "spatial_size"),
        ({"spatial_size": [0, 32]}, "spatial_size"),
        ({"spatial_size": [32, 32, 32]}, "spatial_dims is 2"),
        ({"spatial_size": [100000, 100000]}, "MAX_IMAGE_PIXELS"),
        ({"in_channels": 0}, "in_channels"),
        ({"in_channels": 1_000_000}, "in_channels"),
        ({"bounds": [1.0, 0.0]}, "low < high"),
        ({"bounds": [0.0, 0.0]}, "low < high"),
        ({"bounds": [0.0, "Infinity"]}, "bounds"),
        ({"bounds": [-1e308, 1e308]}, "finite width"),
        ({"bounds": [0.0]}, "bounds"),
        ({"mean": [float("nan")]}, "mean"),
        ({"std": [0.0]}, "std values must be > 0"),
        ({"class_names": ["only"]}, "class_names"),
        ({"class_names": ["a", "a"]}, "unique"),
        ({"class_names": ["a", " "]}, "non-empty"),
        ({"class_names": [f"c{i}" for i in range(MAX_CLASSES + 1)]}, "class_names"),
        ({"num_classes": 3}, "num_classes is 3 but class_names lists 2"),
        ({"num_classes": -1}, "num_classes"),
        ({"positive_class": "tumour"}, "positive_class"),
        ({"input_layout": "CHW"}, "input_layout"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_card_fields(tmp_path, update, fragment):
    values = {**GOOD, **update}
    raw = json.dumps(values).replace('"Infinity"', "Infinity").encode()
    _refused(_write(tmp_path, raw=raw), "not a valid model card", fragment)


def test_card_dict_and_load_model_name_the_card(tmp_path):
    with pytest.raises(CheckpointError, match=r"'card' parameter: not a valid model card: spatial_size"):
        ModelCard.from_mapping({**GOOD, "spatial_size": [-1, 2]})
    # a run folder whose card.json is broken: the error names card.json
    from medrobust.models import build_classifier, save_checkpoint

    card = ModelCard.model_validate(GOOD)
    run = save_checkpoint(build_classifier("small_cnn", card, width=2, depth=1), tmp_path / "run")
    (run / "card.json").write_text('{"in_channels": 1, "class_names": ["a"]}')
    with pytest.raises(CheckpointError, match=r"card\.json: not a valid model card: class_names"):
        load_model(run)


def test_check_bounds_against_data():
    card = ModelCard.model_validate({**GOOD, "bounds": [0, 255]})
    warning = check_bounds_against_data(card, 0.0, 1.0)
    assert warning is not None and "5 %" in warning and "[0, 255]" in warning
    assert check_bounds_against_data(card, 3.0, 250.0) is None
    outside = check_bounds_against_data(card, -10.0, 200.0)
    assert outside is not None and "outside" in outside
    assert "non-finite" in check_bounds_against_data(card, float("nan"), 1.0)
    unit = ModelCard.model_validate(GOOD)
    assert check_bounds_against_data(unit, 0.0, 1.0) is None
    assert check_bounds_against_data(unit, 0.02, 0.9) is None
    assert "outside" in check_bounds_against_data(unit, 0.0, 255.0)
    assert check_bounds_against_data(unit, 1.0, 0.0) is None  # order does not matter


def test_card_preset_options_are_validated_and_kept(tmp_path):
    card = ModelCard.from_mapping({**GOOD, "preset_options": {"value_range": [-1000, 400], "bounds": [0, 1]}})
    assert card.preset_options == {"scaling": "range", "value_range": [-1000.0, 400.0], "bounds": [0.0, 1.0]}
    assert ModelCard.load(card.save(tmp_path / "card.json")).preset_options == card.preset_options
    assert ModelCard.model_validate(GOOD).preset_options == {}
    for bad, fragment in (
        ({"sclaing": "range"}, "Did you mean 'scaling'"),
        ({"spatial_size": [32, 32]}, "the card's spatial_size"),
        ({"channels": 3}, r"preset_options.channels \(3\) must equal in_channels \(1\)"),
        ({"scaling": "range"}, "value_range"),
        ({"percentiles": [99, 1]}, "low < high"),
        ([1, 2], "must be a mapping"),
    ):
        with pytest.raises(CheckpointError, match=rf"card\.json: not a valid model card: .*{fragment}"):
            ModelCard.from_mapping({**GOOD, "preset_options": bad}, "card.json")

"""``medrobust train segmenter`` (registered into the train group through ``register``)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from medrobust.cli.train_segmenter import register
from medrobust.errors import ConfigError


@pytest.fixture
def app():
    group = typer.Typer()
    register(group)

    @group.command("other")  # a second command, so typer keeps "segmenter" as a sub-command
    def _other() -> None:
        """Nothing."""

    return group


def test_train_segmenter_on_a_phantom_spec(app, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDROBUST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["segmenter", "--data", "phantom:chest_xray@32?n=24", "--arch", "tiny", "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "best epoch 1/1: validation Dice background" in result.output
    card = json.loads((out / "card.json").read_text())
    assert card["task"] == "segmentation" and card["class_names"] == ["background", "lung", "nodule"]
    assert card["lesion_classes"] == ["nodule"] and card["spatial_size"] == [32, 32]
    (cached,) = (tmp_path / "cache" / "phantoms" / "segmentation").glob("chest_xray-n24-s32-seed0-g*")
    assert (cached / "dataset.json").is_file()


def test_bad_options_are_one_line_errors(app, tmp_path):
    result = CliRunner().invoke(app, ["segmenter", "--data", str(tmp_path), "--size", "64y64"])
    assert isinstance(result.exception, ConfigError)
    assert "The 'size' parameter must look like 64, 64x64 or 32x32x32. Got '64y64'." in str(result.exception)
    result = CliRunner().invoke(app, ["segmenter", "--data", str(tmp_path), "--arch", "unte"])
    assert isinstance(result.exception, ConfigError) and "Did you mean 'unet'?" in str(result.exception)

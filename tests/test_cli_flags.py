"""Command-line flags: nothing torchrun swallows, one spelling per shared option, defaults in --help."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import pytest
import typer
import typer.main

from medrobust.cli.main import app, main


def _commands() -> dict[str, Any]:
    """Every leaf command of ``medrobust``, by its path (``"audit"``, ``"train classifier"``)."""
    out: dict[str, Any] = {}

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        if hasattr(cmd, "list_commands"):  # a group
            ctx = typer.Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), (*path, name))
        else:
            out[" ".join(path)] = cmd

    walk(typer.main.get_command(app), ())
    return out


COMMANDS = _commands()


def _options(cmd: Any, hidden: bool = False) -> list[Any]:
    return [p for p in cmd.params if p.param_type_name == "option" and bool(p.hidden) == hidden]


def _torchrun_parser():
    from torch.distributed.run import get_args_parser

    return get_args_parser()


def _torchrun_options() -> list[str]:
    return [s for action in _torchrun_parser()._actions for s in action.option_strings]


def test_commands_found():
    assert {"audit", "train classifier", "train defense", "train denoiser", "data phantom", "demo"} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_option_is_a_prefix_of_a_torchrun_option(command):
    """argparse's prefix matching reads ``--n`` as torchrun's --nnodes/--nproc-per-node/... and stops;
    every medrobust option must reach the command untouched, so none may be a prefix of one of
    torchrun's options (its parser read here, not a hard-coded list)."""
    theirs = _torchrun_options()
    assert "--nnodes" in theirs and "--nproc-per-node" in theirs
    parser = _torchrun_parser()
    for option in _options(COMMANDS[command]):
        for flag in [*option.opts, *option.secondary_opts]:
            if flag == "--help":
                continue
            clash = [t for t in theirs if t.startswith(flag)] if flag.startswith("--") else []
            assert not clash, f"medrobust {command} {flag} is a prefix of torchrun's {clash}"
            script = [*command.split(), flag, "7"]
            args = parser.parse_args(["--nproc_per_node", "2", "-m", "medrobust", *script])
            assert args.training_script == "medrobust" and args.training_script_args == script, flag


def test_no_hidden_options_and_one_sample_count_spelling(capsys):
    from medrobust.cli.options import SAMPLES_FLAGS

    hidden = {(name, f) for name, cmd in COMMANDS.items() for o in _options(cmd, hidden=True) for f in o.opts}
    assert hidden == set()
    for name in ("audit", "data phantom", "train denoiser"):
        flags = {f for o in _options(COMMANDS[name]) for f in o.opts}
        assert set(SAMPLES_FLAGS) <= flags and "--n" not in flags, name
    # the old --n (a prefix of torchrun's --nnodes/--nproc-per-node) is one usage error, exit 2
    assert main(["audit", "--n", "16"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--n" in err


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_audit_with_a_sample_limit(tmp_path):
    """README's torchrun command with a sample limit: 2 gloo processes, -n reaches the audit."""
    import torch

    from medrobust.data.specs import phantom_npz
    from medrobust.models import ModelCard, build_classifier, save_checkpoint

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDROBUST_CACHE": str(tmp_path / "cache")}
    card = ModelCard(
        in_channels=1,
        class_names=["normal", "pneumonia"],
        spatial_size=(32, 32),
        modality="chest_xray",
        mean=[0.5],
        std=[0.25],
    )
    torch.manual_seed(0)
    model = save_checkpoint(build_classifier("small_cnn", card, width=4, depth=2).eval(), tmp_path / "model")
    phantom_npz("chest_xray", 60, 32, 0, tmp_path / "cache" / "phantoms")  # generated once, not per rank
    out = tmp_path / "audit"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "medrobust", "audit"]
    cmd += ["--model", str(model), "--data", "phantom:chest_xray@32?n=60", "--split", "all", "-n", "12"]
    cmd += ["--attacks", "fgsm", "--eps", "2/255", "--batch-size", "4", "--device", "cpu"]
    cmd += ["--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["n"] == 12 and results["data"]["n_available"] == 60
    assert [c["attack"] for c in results["cells"]] == ["fgsm"]
    env_record = json.loads((out / "environment.json").read_text())
    assert env_record["world_size"] == 2 and env_record["backend"] == "gloo"
    assert proc.stdout.count("report:") == 1  # rank 0 alone printed the summary


# -- defaults in --help and one progress switch ---------------------------------------------------
#: Commands that follow cli/options.py's conventions: every default shown in --help (config-backed
#: ones say "the config's, else ..."), one progress switch. Commands added since are checked only
#: for what they show.
CONVENTIONS = {
    "audit",
    "card init",
    "data inspect",
    "data phantom",
    "demo",
    "denoisers study",
    "train classifier",
    "train defense",
    "train denoiser",
}
#: Options that have no default at all (nothing is used when they are not given).
NO_DEFAULT = {
    ("audit", "--config"),
    ("audit", "--junit"),
    ("train denoiser", "--config"),
    ("train classifier", "--config"),
    ("train classifier", "--data"),
    ("train classifier", "--modality"),
    ("train defense", "--config"),
    ("train defense", "--classifier"),
    ("train defense", "--ablate"),
    ("card init", "--weights"),
}


def _help_record(command: str, option) -> str:
    cmd = COMMANDS[command]
    ctx = typer.Context(cmd, info_name=command)
    record = option.get_help_record(ctx)
    return "" if record is None else record[1]


def _plain_flag(option) -> bool:
    """An on-switch such as --fresh (off unless given): nothing to show as a default."""
    return bool(option.is_flag) and not option.secondary_opts and not option.default


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_every_default(command):
    for option in _options(COMMANDS[command]):
        if option.opts == ["--help"] or _plain_flag(option) or option.required:
            continue
        has_default = option.default is not None or isinstance(option.show_default, str)
        if command in CONVENTIONS and (command, option.opts[0]) not in NO_DEFAULT:
            assert has_default, f"medrobust {command} {option.opts[0]}: no default shown in --help"
        if has_default:
            assert "[default: " in _help_record(command, option), (command, option.opts)


def test_conventions_cover_existing_commands():
    assert set(COMMANDS) >= CONVENTIONS


@pytest.mark.parametrize("command", sorted(CONVENTIONS))
def test_one_progress_switch(command):
    from medrobust.cli.options import PROGRESS_FLAGS

    for option in _options(COMMANDS[command]):
        flags = [*option.opts, *option.secondary_opts]
        if any("progress" in f for f in flags):
            assert "/".join(flags) == PROGRESS_FLAGS and option.default is True, (command, flags)
            assert "[default: progress]" in _help_record(command, option)


def _shown(command: str, flag: str) -> str:
    (option,) = [o for o in _options(COMMANDS[command]) if flag in o.opts]
    return str(option.show_default)


def test_config_defaults_shown_are_the_configs():
    from medrobust.denoising.data import DenoisingData
    from medrobust.denoising.training import TrainDenoiserConfig
    from medrobust.evaluation.config import AuditConfig, DataConfig

    fields = AuditConfig.model_fields
    for flag, name in (("--samples", "n_samples"), ("--batch-size", "batch_size"), ("--seed", "seed")):
        assert _shown("audit", flag).endswith(f", else {fields[name].default}"), flag
    assert _shown("audit", "--device").endswith(f", else {fields['device'].default}")
    assert _shown("audit", "--threat").endswith(", else " + ",".join(fields["threats"].default_factory()))
    assert _shown("audit", "--split").endswith(f", else {DataConfig.model_fields['split'].default}")
    den, data = TrainDenoiserConfig.model_fields, DenoisingData.model_fields
    for flag, value in (
        ("--epochs", den["epochs"].default),
        ("--batch-size", den["batch_size"].default),
        ("--lr", den["lr"].default),
        ("--seed", den["seed"].default),
        ("--device", den["device"].default),
        ("--size", data["size"].default),
        ("--samples", data["n"].default),
        ("--data", f"{data['kind'].default}:{data['modality'].default}"),
    ):
        assert _shown("train denoiser", flag).endswith(f", else {value}"), flag
    from fractions import Fraction

    assert float(Fraction(_shown("train denoiser", "--sigma").rsplit(" ", 1)[1])) == den["sigma"].default

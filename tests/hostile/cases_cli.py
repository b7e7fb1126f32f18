"""Hostile cases at the front door: configs, options and attack parameters."""

from __future__ import annotations

from pathlib import Path

from ._case import Call, hostile
from ._fixtures import audit_yaml, tiny_classifier_run, write_yaml

#: The chest X-ray phantom's class names (what phantom data carry).
PHANTOM_CLASSES = ("normal", "pneumonia")

BILLION_LAUGHS = """a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _out(d: Path) -> str:
    return str(d / "out")


# -- config files: audit, train classifier, train defense, train denoiser -----------------
_COMMANDS = {
    "audit": lambda cfg, d: ["audit", "--config", str(cfg), "--out", _out(d)],
    "train-classifier": lambda cfg, d: ["train", "classifier", "--config", str(cfg), "--out", _out(d)],
    "train-defense": lambda cfg, d: ["train", "defense", "--config", str(cfg), "--out", _out(d)],
    "train-denoiser": lambda cfg, d: ["train", "denoiser", "--config", str(cfg), "--out", _out(d)],
}


def _config_cases() -> None:
    def folder(d: Path) -> Path:
        (d / "cfg.yaml").mkdir()
        return d / "cfg.yaml"

    def latin1(d: Path) -> Path:
        (d / "cfg.yaml").write_bytes("name: r\xe9sum\xe9\n".encode("latin-1"))
        return d / "cfg.yaml"

    def invalid(d: Path) -> Path:
        return write_yaml(d / "cfg.yaml", "data: [unclosed\n  model: {\n")

    def top_list(d: Path) -> Path:
        return write_yaml(d / "cfg.yaml", "- a\n- b\n")

    def anchors(d: Path) -> Path:
        return write_yaml(d / "cfg.yaml", "x: &x {epochs: 1}\ny: *x\n")

    def huge(d: Path) -> Path:
        return write_yaml(d / "cfg.yaml", "notes:\n" + "  - padding padding padding padding\n" * 40000)

    def binary(d: Path) -> Path:
        (d / "cfg.yaml").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
        return d / "cfg.yaml"

    def missing(d: Path) -> Path:
        return d / "nope.yaml"

    makers = {
        "folder": folder,
        "latin1": latin1,
        "invalid-yaml": invalid,
        "top-level-list": top_list,
        "anchor-alias": anchors,
        "over-1mb": huge,
        "binary": binary,
        "missing": missing,
    }
    for command, argv in _COMMANDS.items():
        for what, make in makers.items():

            def build(d: Path, make=make, argv=argv) -> Call:
                cfg = make(d)
                return Call(argv(cfg, d), names=(cfg.name,))

            hostile(f"config-{command}-{what}")(build)


_config_cases()


@hostile("config-audit-billion-laughs")
def _billion_laughs(d: Path) -> Call:
    cfg = write_yaml(d / "bomb.yaml", BILLION_LAUGHS)
    return Call(["audit", "--config", str(cfg), "--out", _out(d)], names=("bomb.yaml",), bomb=True)


@hostile("config-attack-params-alias-bomb")
def _params_bomb(d: Path) -> Call:
    model = tiny_classifier_run(d / "model", class_names=PHANTOM_CLASSES)
    attacks = "  - {name: pgd, params: {steps: 2}}\n"
    text = BILLION_LAUGHS + audit_yaml(model, attacks)
    cfg = write_yaml(d / "audit.yaml", text)
    return Call(["audit", "--config", str(cfg), "--out", _out(d)], names=("audit.yaml",), bomb=True)


# -- attack parameters that ask for unbounded work ------------------------------------------
def _attack_param_case(name: str, attack: str, param: str, value: str) -> None:
    def build(d: Path) -> Call:
        model = tiny_classifier_run(d / "model", class_names=PHANTOM_CLASSES)
        block = f"  - {{name: {attack}, params: {{{param}: {value}}}}}"
        cfg = write_yaml(d / "audit.yaml", audit_yaml(model, block))
        argv = ["audit", "--config", str(cfg), "--out", _out(d)]
        return Call(argv, names=(f"'{param}'",), writes=("runs",))

    hostile(name)(build)


_attack_param_case("attack-pgd-steps-1e12", "pgd", "steps", "1000000000000")
_attack_param_case("attack-pgd-restarts-1e9", "pgd", "restarts", "1000000000")
_attack_param_case("attack-pgd-steps-negative", "pgd", "steps", "-5")
_attack_param_case("attack-pgd-steps-text", "pgd", "steps", "'10^12'")
_attack_param_case("attack-spsa-samples-1e12", "spsa", "samples", "1000000000000")
_attack_param_case("attack-square-queries-1e12", "square", "queries", "1000000000000")
_attack_param_case("attack-cw-binary-steps-1e9", "cw", "binary_steps", "1000000000")
_attack_param_case("attack-deepfool-steps-inf", "deepfool", "steps", ".inf")


# -- options ---------------------------------------------------------------------------------
@hostile("option-unknown-attack")
def _unknown_attack(d: Path) -> Call:
    model = tiny_classifier_run(d / "model", class_names=PHANTOM_CLASSES)
    argv = ["audit", "--model", str(model), "--data", "phantom:chest_xray", "--attacks", "pgdd"]
    return Call([*argv, "--eps", "2/255", "--out", _out(d)], names=("pgdd",))


@hostile("option-negative-eps")
def _negative_eps(d: Path) -> Call:
    model = tiny_classifier_run(d / "model", class_names=PHANTOM_CLASSES)
    argv = ["audit", "--model", str(model), "--data", "phantom:chest_xray", "--attacks", "fgsm"]
    return Call([*argv, "--eps=-0.1", "--out", _out(d)], names=("-0.1", "eps", "linf"))


@hostile("option-eps-division-by-zero")
def _eps_zero_div(d: Path) -> Call:
    model = tiny_classifier_run(d / "model", class_names=PHANTOM_CLASSES)
    argv = ["audit", "--model", str(model), "--data", "phantom:chest_xray", "--attacks", "fgsm"]
    return Call([*argv, "--eps", "2/0", "--out", _out(d)], names=("2/0",))


@hostile("option-bad-device")
def _bad_device(d: Path) -> Call:
    model = tiny_classifier_run(d / "model", class_names=PHANTOM_CLASSES)
    argv = ["audit", "--model", str(model), "--data", "phantom:chest_xray", "--attacks", "fgsm"]
    return Call([*argv, "--device", "tpu", "--out", _out(d)], names=("tpu", "device"))


@hostile("option-unknown-flag")
def _unknown_flag(d: Path) -> Call:
    return Call(["audit", "--frobnicate", "--out", _out(d)], names=("--frobnicate",))


@hostile("option-unknown-command")
def _unknown_command(d: Path) -> Call:
    return Call(["frobnicate"], names=("frobnicate",))


@hostile("option-missing-value")
def _missing_value(d: Path) -> Call:
    return Call(["audit", "--out"], names=("--out",))


@hostile("option-train-unknown-modality")
def _train_modality(d: Path) -> Call:
    return Call(
        ["train", "classifier", "--data", "phantom:chest_xray", "--modality", "chest_xary", "--out", _out(d)],
        names=("chest_xary",),
    )


@hostile("option-train-lr-inf")
def _train_lr_inf(d: Path) -> Call:
    return Call(
        [
            "train",
            "classifier",
            "--data",
            "phantom:chest_xray",
            "--modality",
            "chest_xray",
            "--lr",
            "inf",
            "--out",
            _out(d),
        ],
        names=("lr",),
    )


@hostile("option-denoiser-param-alias")
def _denoiser_param_alias(d: Path) -> Call:
    return Call(
        ["train", "denoiser", "--arch", "dncnn", "--param", "width=&a 3", "--out", _out(d)],
        names=("width",),
    )

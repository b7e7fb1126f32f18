"""environment.yml (conda) describes the same environment as the pinned pip requirements.

Checked: the same Python minor version as the interpreter running the tests, every pip
pin of requirements.txt + requirements-dev.txt present in environment.yml with the same
version and nothing extra, every pin installed at that version in this environment, and
the torchattacks pin (installed with ``--no-deps``) the same in the Makefile,
environment.yml's instructions and the README's conda section.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)$")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            pins.update(_requirement_pins(path.parent / line[3:].strip()))
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: {raw!r} is not an exact 'name==version' pin"
        pins[_canon(match[1])] = match[2]
    return pins


def _environment() -> tuple[str, dict[str, str], str]:
    text = (ROOT / "environment.yml").read_text()
    env = yaml.safe_load(text)
    python, pip_list = None, None
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_list = dep["pip"]
        elif dep.startswith("python="):
            python = dep.split("=", 1)[1]
    assert python and pip_list is not None, "environment.yml needs python=X.Y and a pip: list"
    pins = {}
    for item in pip_list:
        match = PIN.match(item)
        assert match, f"environment.yml: pip entry {item!r} is not an exact 'name==version' pin"
        pins[_canon(match[1])] = match[2]
    return python, pins, text


def test_environment_yml_has_the_same_pins_as_the_requirements():
    _, conda_pins, _ = _environment()
    pip_pins = _requirement_pins(ROOT / "requirements-dev.txt")
    assert "torch" in pip_pins and "torchvision" in pip_pins
    missing = {k: v for k, v in pip_pins.items() if k not in conda_pins}
    extra = {k: v for k, v in conda_pins.items() if k not in pip_pins}
    differ = {
        k: (pip_pins[k], conda_pins[k])
        for k in pip_pins.keys() & conda_pins.keys()
        if pip_pins[k] != conda_pins[k]
    }
    assert not missing and not extra and not differ, (
        f"environment.yml vs requirements: missing {missing}, extra {extra}, different {differ}"
    )


def test_environment_yml_python_is_the_one_tested():
    python, _, _ = _environment()
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.mark.parametrize("name, version", sorted(_requirement_pins(ROOT / "requirements-dev.txt").items()))
def test_pins_are_what_is_installed(name, version):
    assert metadata.version(name) == version


def test_torchattacks_pin_agrees_everywhere():
    _, conda_pins, env_text = _environment()
    makefile = (ROOT / "Makefile").read_text()
    (pin,) = set(re.findall(r"torchattacks==([0-9.]+)", makefile))
    assert metadata.version("torchattacks") == pin
    assert "torchattacks" not in conda_pins, "torchattacks goes in with --no-deps, not in the pip: list"
    assert f"pip install --no-deps torchattacks=={pin}" in env_text
    readme = (ROOT / "README.md").read_text()
    conda = readme.split("## Conda users", 1)[1].split("\n## ", 1)[0]
    assert f"pip install --no-deps torchattacks=={pin}" in conda
    assert "conda env create -f environment.yml" in conda

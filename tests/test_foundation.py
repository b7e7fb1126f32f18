import subprocess
import sys

import pytest

from medrobust.errors import ConfigError
from medrobust.registry import Registry
from medrobust.utils.io import atomic_write_text
from medrobust.validation import check_float, parse_number


def test_registry_did_you_mean():
    reg: Registry[int] = Registry("attack")
    reg.add("deepfool", 1)
    reg.add("pgd", 2)
    assert reg.get("PGD") == 2
    with pytest.raises(ConfigError, match="Did you mean 'deepfool'") as info:
        reg.get("deepfol")
    assert "Valid attack names: deepfool, pgd" in str(info.value)


def test_check_float_message_names_parameter():
    with pytest.raises(ConfigError) as info:
        check_float(-0.1, "eps", "PGD", low=0, high=1)
    assert str(info.value) == "The 'eps' parameter of PGD must be a float in (0, 1]. Got -0.1."
    assert check_float("2/255", "eps", "PGD", low=0, high=1) == pytest.approx(2 / 255)


@pytest.mark.parametrize("bad", ["abc", "1/0", float("nan"), True, None])
def test_parse_number_rejects(bad):
    with pytest.raises(ConfigError, match="'eps'"):
        parse_number(bad, "eps")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "first")

    class BoomError(RuntimeError):
        pass

    from medrobust.utils.io import atomic_write

    def writer(fh):
        fh.write("partial")
        raise BoomError()

    with pytest.raises(BoomError):
        atomic_write(target, writer)
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_import_is_light():
    code = "import sys, medrobust; print([m for m in ('torch', 'monai', 'pandas') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_help_is_fast_and_light():
    code = (
        "import sys; from medrobust.cli.main import app; "
        "print([m for m in ('torch', 'monai') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

"""Importing the dataset module does not import MONAI (every torchrun rank would pay for it)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import medrobust.data.dataset
import medrobust.data.opening
import medrobust.data.orientation
import medrobust.data.presets
import medrobust.data.specs
loaded = sorted(m for m in sys.modules if m == "monai" or m.startswith("monai."))
assert not loaded, f"monai imported: {loaded[:5]}"
print("ok")
"""


def test_importing_the_dataset_module_does_not_import_monai():
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"

"""Modality presets: ``get_preset("chest_xray").transform(spatial_size=(64, 64))``.

One file per preset, found through the :data:`PRESETS` registry. Importing this
package is light (no torch/MONAI until a pipeline is built).
"""

from medrobust.data.presets.base import PRESETS, Preset, get_preset, list_presets, register_preset
from medrobust.registry import import_submodules

import_submodules(__name__)

__all__ = ["PRESETS", "Preset", "get_preset", "list_presets", "register_preset"]

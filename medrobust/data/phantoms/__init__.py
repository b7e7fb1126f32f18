"""Labelled synthetic ("phantom") data sets for every modality: the built-in demo and test data.

>>> from medrobust.data.phantoms import make_phantom, write_phantom
>>> ps = make_phantom("chest_xray", n=40, size=64, seed=0)       # doctest: +SKIP
>>> write_phantom("brain_mri", 600, 64, "dicom", "out/brain")    # doctest: +SKIP
"""

from medrobust.data.phantoms.base import (
    PHANTOMS,
    PhantomGenerator,
    PhantomSet,
    get_phantom,
    list_phantoms,
    make_phantom,
    register_phantom,
)
from medrobust.data.phantoms.writers import FORMATS, write_phantom
from medrobust.registry import import_submodules

import_submodules(__name__)

__all__ = [
    "FORMATS",
    "PHANTOMS",
    "PhantomGenerator",
    "PhantomSet",
    "get_phantom",
    "list_phantoms",
    "make_phantom",
    "register_phantom",
    "write_phantom",
]

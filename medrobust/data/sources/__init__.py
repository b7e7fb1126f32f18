"""Data sources, one file per kind, registered in :data:`medrobust.data.base.SOURCES`."""

from medrobust.registry import import_submodules

import_submodules(__name__)

"""Image + mask layouts (Decathlon, CSV manifest, mask folder, DICOM series), one file each."""

from medrobust.registry import import_submodules

import_submodules(__name__)

"""Caps on what an input file can make large (one place; the README's "Bad input" section cites them).

A few bytes of CSV, YAML or PNG header can ask for a billion classes, a 12000² image or a
trillion attack steps. Each cap below is far above any real medical-imaging use and far
below what would exhaust a 24 GiB machine; inputs beyond it are refused with an error that
names the parameter or file, before any allocation.
"""

from __future__ import annotations

#: Largest class index a label may have (labels are 0 … MAX_CLASSES-1).
MAX_CLASSES = 10_000
#: Most phantom images one call may generate.
MAX_PHANTOM_IMAGES = 1_000_000
#: Most pixels (voxels for volumes) one decoded image may have: 8192 × 8192 = 67 M.
#: 12000² (a 140 KB PNG can declare it) is refused from the header, before decoding.
MAX_IMAGE_PIXELS = 8192 * 8192
#: Most iterations (steps, binary-search steps × iterations count separately) one attack may run.
MAX_ATTACK_STEPS = 100_000
#: Most model queries of a gradient-free attack (SPSA samples, Square queries).
MAX_ATTACK_QUERIES = 10_000_000
#: Most random restarts of one attack.
MAX_ATTACK_RESTARTS = 1_000
#: Largest YAML config file read (bytes).
MAX_CONFIG_BYTES = 1_000_000

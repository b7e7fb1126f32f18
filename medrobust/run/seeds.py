"""The one seed derivation: a stable 31-bit seed from a run seed and text keys (SHA-256).

Python's ``hash`` changes between processes and CRC-style mixes collide; SHA-256 of
``"seed:key1:key2"`` is stable across machines, versions and processes, so a random
choice recorded as (seed, keys) can be replayed exactly.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *keys: object) -> int:
    """A seed in ``[0, 2**31)`` derived from ``seed`` and ``keys`` (e.g. ``derive_seed(0, "batch3")``)."""
    text = ":".join([str(int(seed)), *(str(k) for k in keys)])
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

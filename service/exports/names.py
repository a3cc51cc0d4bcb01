"""Names for the layers and tensors of an exported file."""
from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


class UniqueNames:
    """Each name asked for, made safe for Keras and ONNX (ASCII letters, digits, '_', '.', '-'; Keras refuses
    '/') and unique within one export: a repeat gets ``_1``, ``_2``, ... ``empty`` stands in for a name that
    has nothing left."""

    def __init__(self, empty: str = "layer"):
        self.empty = empty
        self.used: set[str] = set()

    def __call__(self, wanted: str) -> str:
        base = _UNSAFE.sub("_", str(wanted)) or self.empty
        name, k = base, 1
        while name in self.used:
            name = f"{base}_{k}"
            k += 1
        self.used.add(name)
        return name

"""Stands for any module on the caller's path whose import has effects: forged results name it.

A test asserts that this module never shows up in ``sys.modules`` of a caller that only decoded
a result naming it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Thing:
    value: int = 0

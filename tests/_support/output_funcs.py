"""Remote functions of the ``output=`` tests (tests/test_output_option.py)."""

from __future__ import annotations

import flyjobs


@flyjobs.remote(timeout_s=60)
def say(x: int) -> int:
    """Prints one line; input 1 then fails."""
    print(f"input {x} says hi")  # noqa: T201 - what the caller shows or not is tested
    if x == 1:
        raise ValueError("one fails")
    return x

"""How a bundle travels to a machine: inline in its config while small, else fetched.

A bundle of at most ``code_inline_max_bytes`` (zipped) is a file of the machine config
(``config.files``, base64 ``raw_value``) at `bundle_guest_path`; a larger one is fetched from a
URL (`flyjobs._results.channel.Channel.code_url`: the inbox, else the object store). The call
envelope names where it is and its sha256, which the worker checks before it unpacks
(`flyjobs._machine_side.code`).
"""

from __future__ import annotations

from .._wire.machine import CODE_GUEST_DIR
from .bundle import Bundle

__all__ = ("bundle_guest_path", "inline", "travel")


def bundle_guest_path(bundle: Bundle) -> str:
    """The fixed guest path of ``bundle``'s file in a machine config."""
    return f"{CODE_GUEST_DIR}/{bundle.sha256}.zip"


def inline(bundle: Bundle, inline_max_bytes: int) -> bool:
    """Whether ``bundle`` travels inside the machine config (``0``: never)."""
    return 0 < len(bundle.data) <= inline_max_bytes


def travel(bundle: Bundle, inline_max_bytes: int) -> str:
    """How ``bundle`` would reach a machine, in words."""
    if inline(bundle, inline_max_bytes):
        return (
            f"inline in each machine's config ({len(bundle.data)} bytes zipped, at most"
            f" {inline_max_bytes}: FLYJOBS_CODE_INLINE_MAX_BYTES)"
        )
    return (
        f"fetched once by each machine ({len(bundle.data)} bytes zipped, over the"
        f" {inline_max_bytes}-byte inline cap FLYJOBS_CODE_INLINE_MAX_BYTES): from this"
        " process's inbox where machines reach it, else from the object store as"
        f" code/{bundle.sha256}.zip, uploaded once; a scheduled function cannot deploy it"
    )

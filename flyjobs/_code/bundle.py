"""The bundle: the caller's own files a function needs, as one deterministic zip named by its
sha256.

Entries are sorted by name, each with a fixed timestamp (1980-01-01) and mode (0644), so the
same files make the same bytes, hence the same hash, on every build. A build is kept for the
rest of the process and reused while every file and folder it read keeps its mtime and size.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .._exceptions import ConfigError
from .._wire.codec import main_module_name
from .collect import IGNORE_FILE, Collected, Source, collect, collect_source, stamp

__all__ = ("DEFAULT_MAX_BYTES", "Bundle", "bundle_for", "bundle_of_source", "clear_cache", "pack")

#: Largest total size (bytes, before compression) of the files a bundle holds, by default.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
#: The timestamp of every entry (zip's earliest), so that a rebuild is byte-identical.
_EPOCH = (1980, 1, 1, 0, 0, 0)
#: How many of the largest files an over-the-cap error names.
_NAMED_LARGEST = 5


@dataclass(frozen=True)
class Bundle:
    """One bundle: the zip's bytes, its sha256 (hex), the files in it and the project root
    they were found in."""

    data: bytes
    sha256: str
    sources: tuple[Source, ...]
    root: Path
    #: installed distributions its modules import: (module, distribution, version here)
    requires: tuple[tuple[str, str, str], ...] = ()

    @property
    def total_bytes(self) -> int:
        """The files' total size (bytes, before compression)."""
        return sum(source.size for source in self.sources)


_cache: dict[tuple[str, str], tuple[Collected, Bundle]] = {}
_cache_lock = threading.Lock()


def bundle_for(fn_ref: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Bundle | None:
    """The bundle of the function ``fn_ref`` (``module:qualname``) names, or None when its
    module is not the project's own (the image has it: nothing ships).

    Built once per process per content: reused while none of the files and folders it was
    built from changed (mtime, size).

    :raises ConfigError: the files total more than ``max_bytes``: names the largest and the
        ignore file that keeps files out.
    """
    module_name = fn_ref.partition(":")[0]
    module = sys.modules.get(module_name)
    if module is None and module_name == main_module_name():
        module = sys.modules.get("__main__")
    module_file = getattr(module, "__file__", None)
    if module is None or not module_file:
        return None
    key = (module_name, module_file)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and all(stamp(path) == was for path, was in cached[0].watched):
        _check_size(cached[1].sources, cached[1].root, max_bytes)
        return cached[1]
    collected = collect(module_name, module_file)
    if collected is None:
        return None
    return _built(key, collected, max_bytes)


def bundle_of_source(
    module_name: str, source: str, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Bundle:
    """The bundle of a module made here (a notebook's function, see
    `flyjobs._code.main_source`) and the project's own modules it imports, the project being
    the working directory's. Cached as `bundle_for` is.

    :raises ConfigError: over ``max_bytes``, as for `bundle_for`.
    """
    key = (module_name, "")
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and all(stamp(path) == was for path, was in cached[0].watched):
        _check_size(cached[1].sources, cached[1].root, max_bytes)
        return cached[1]
    return _built(key, collect_source(module_name, source, os.getcwd()), max_bytes)


def _built(key: tuple[str, str], collected: Collected, max_bytes: int) -> Bundle:
    _check_size(collected.sources, collected.root, max_bytes)
    data = pack(collected.sources)
    bundle = Bundle(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        sources=collected.sources,
        root=collected.root,
        requires=collected.requires,
    )
    with _cache_lock:
        _cache[key] = (collected, bundle)
    return bundle


def _check_size(sources: tuple[Source, ...], root: Path, max_bytes: int) -> None:
    total = sum(source.size for source in sources)
    if total <= max_bytes:
        return
    largest = sorted(sources, key=lambda source: source.size, reverse=True)[:_NAMED_LARGEST]
    named = ", ".join(f"{source.name} ({_mib(source.size)})" for source in largest)
    raise ConfigError(
        f"the code that would ship with the call totals {_mib(total)}, over the"
        f" {_mib(max_bytes)} cap (FLYJOBS_CODE_MAX_BYTES); the largest files: {named}. Keep"
        f" data out of the bundle with patterns in {root / IGNORE_FILE} (gitignore syntax),"
        " put it in the image or an object store, or raise the cap; no machine was created"
    )


def _mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


def pack(sources: tuple[Source, ...]) -> bytes:
    """The deterministic zip of ``sources``: sorted names, fixed timestamps and modes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for source in sorted(sources, key=lambda each: each.name):
            content = source.content
            if content is None:
                with open(source.path, "rb") as file:
                    content = file.read()
            info = zipfile.ZipInfo(source.name, date_time=_EPOCH)
            info.create_system = 3  # unix: external_attr holds the mode
            info.external_attr = (0o100644 & 0xFFFF) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content, compresslevel=6)
    return buffer.getvalue()


def clear_cache() -> None:
    """Forget every bundle built (tests that rewrite files within one mtime tick)."""
    with _cache_lock:
        _cache.clear()

"""The caller's code bundle on a machine: checked, unpacked once, first on ``sys.path``.

A call envelope's ``code`` names a bundle (`flyjobs._wire.call_envelope`): its sha256, the
seal of that hash for the call under the result key, and a file of the machine config or a URL
to GET it from. Before anything of it is unpacked, the seal and the hash are checked; a bundle
that fails either is refused (`CodeRefused`) and nothing of it runs. A bundle is unpacked once
per machine into a folder named by its hash (under `flyjobs._wire.machine.CODE_GUEST_DIR`),
which goes first on ``sys.path``, so that the shipped code wins over a copy in the image. A
machine whose next call brings another bundle (a warm pool's, after an edit) drops the modules
it imported from the last one, so the call imports its own version.

Standard library only, and no ``zipfile``: it imports ~30 ms of modules (pathlib, shutil,
importlib.util...) that every machine with a bundle would pay; the zips the caller makes
(`flyjobs._code.bundle.pack`) are read here with ``zlib`` and ``_struct``.
"""

from __future__ import annotations

import os
import sys

from flyjobs._exceptions import ConfigError
from flyjobs._machine_side.drift import drift_lines
from flyjobs._wire.machine import CODE_GUEST_DIR, MACHINE_ROOT_ENV
from flyjobs._wire.seal import seal_code

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("Bundles", "CodeRefused")


class CodeRefused(ConfigError):
    """A call's code bundle is not the one its caller sealed, or cannot be read."""


def _guest(path: str) -> str:
    """A guest path as this machine sees it (under the emulator's machine root)."""
    root = os.environ.get(MACHINE_ROOT_ENV, "")
    return os.path.join(root, path.lstrip("/")) if root else path


def _sha256(data: bytes) -> str:
    # From the builtin module: hashlib would load OpenSSL, a few ms of a machine's start.
    try:
        from _sha2 import sha256  # type: ignore[import-not-found]  # Python >= 3.12
    except ImportError:
        from _sha256 import sha256  # type: ignore[import-not-found]  # Python 3.11
    digest: str = sha256(data).hexdigest()
    return digest


class Bundles:
    """The bundles of one machine: the one its calls import from now, and where each is."""

    def __init__(self, result_key: str | None, fetch: Callable[[str], bytes]) -> None:
        self._result_key = result_key
        self._fetch = fetch
        self._current: str | None = None
        self._folders: dict[str, str] = {}

    def use(self, call_id: str, code: dict[str, Any]) -> bool:
        """Make the bundle ``code`` names the one imported from; return True when it replaced
        another (the function must be imported again).

        :raises CodeRefused: its seal or hash is not the caller's, or it cannot be read.
        """
        sha256 = code["sha256"]
        if sha256 == self._current:
            return False
        folder = self._folders.get(sha256)
        if folder is None:
            folder = self._folders[sha256] = self._unpack(call_id, code)
            # Once per bundle and machine, on the call's stderr: which dependencies differ.
            for line in drift_lines(code.get("requires", [])):
                sys.stderr.write(f"flyjobs: {line}\n")
        replaced = self._current is not None
        if replaced:
            self._forget(self._folders[self._current or ""])
        sys.path.insert(0, folder)
        # A bundle's modules are imported once per machine from a fresh folder: caching their
        # bytecode would only cost its writes (an image's own modules come compiled).
        sys.dont_write_bytecode = True
        self._current = sha256
        return replaced

    def _unpack(self, call_id: str, code: dict[str, Any]) -> str:
        sha256 = code["sha256"]
        if self._result_key and not _same(
            code["seal"], seal_code(self._result_key, sha256, call_id)
        ):
            raise CodeRefused(
                f"call {call_id}: its code bundle's hash is not sealed by the caller's result"
                " key, so the machine's config was changed by someone who can write it; the"
                " machine refused the bundle unread"
            )
        folder = _guest(f"{CODE_GUEST_DIR}/{sha256}")
        if os.path.isdir(folder):
            return folder  # unpacked by an earlier process of this machine
        data = self._read(call_id, code)
        if _sha256(data) != sha256:
            raise CodeRefused(
                f"call {call_id}: its code bundle is not the one its caller sent (its sha256"
                " differs from the one sealed in the call), so someone who can write where it"
                " travels replaced it; the machine refused it unpacked and ran none of it"
            )
        staging = f"{folder}.{os.getpid()}.tmp"
        try:
            _extract(data, staging)
        except (ValueError, OSError) as exc:
            raise CodeRefused(
                f"call {call_id}: its code bundle cannot be unpacked: {exc}"
            ) from None
        try:
            os.rename(staging, folder)
        except OSError:
            if not os.path.isdir(folder):
                raise
        return folder

    def _read(self, call_id: str, code: dict[str, Any]) -> bytes:
        try:
            if code.get("path"):
                with open(_guest(code["path"]), "rb") as file:
                    return file.read()
            if code.get("url"):
                return self._fetch(code["url"])
        except OSError as exc:
            raise CodeRefused(f"call {call_id}: its code bundle cannot be read: {exc}") from None
        raise CodeRefused(
            f"call {call_id}: its code bundle is neither in the machine's config nor at a URL"
            " (a machine of a pool serves one bundle inline; the call needs another)"
        )

    @staticmethod
    def _forget(folder: str) -> None:
        """Take ``folder`` off ``sys.path`` and drop the modules imported from it."""
        while folder in sys.path:
            sys.path.remove(folder)
        prefix = folder + os.sep
        for name, module in list(sys.modules.items()):
            if (getattr(module, "__file__", None) or "").startswith(prefix):
                del sys.modules[name]


def _same(a: str, b: str) -> bool:
    # hmac's compare_digest, from its C home: hmac imports hashlib, which loads OpenSSL.
    from _operator import _compare_digest

    same: bool = _compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))
    return same


def _extract(data: bytes, folder: str) -> None:
    """Write the files of the zip ``data`` under ``folder`` (stored or deflated entries).

    :raises ValueError: it is not such a zip, or an entry's name would leave ``folder``.
    """
    import zlib  # lazy: keeps machines without a bundle light
    from _struct import unpack_from

    end = data.rfind(b"PK\x05\x06")
    if end < 0 or len(data) < end + 22:
        raise ValueError("no zip directory")
    count, _size, offset = unpack_from("<HII", data, end + 10)
    for _ in range(count):
        if data[offset : offset + 4] != b"PK\x01\x02":
            raise ValueError("a zip directory entry is malformed")
        method, _t, _d, _crc, packed, _unpacked, name_len, extra_len, comment_len = unpack_from(
            "<HHHIIIHHH", data, offset + 10
        )
        (local,) = unpack_from("<I", data, offset + 42)
        name = data[offset + 46 : offset + 46 + name_len].decode("utf-8")
        offset += 46 + name_len + extra_len + comment_len
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or ".." in parts or "" in parts[:-1]:
            raise ValueError(f"entry {name!r} would leave the bundle's folder")
        if name.endswith("/"):
            continue
        local_name, local_extra = unpack_from("<HH", data, local + 26)
        start = local + 30 + local_name + local_extra
        raw = data[start : start + packed]
        if method == 8:
            content = zlib.decompress(raw, -15)
        elif method == 0:
            content = raw
        else:
            raise ValueError(f"entry {name!r} uses zip method {method}")
        path = os.path.join(folder, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(content)

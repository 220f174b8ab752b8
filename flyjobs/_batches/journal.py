"""Resumable batches: a journal of the inputs a named batch has finished.

``fn.map(inputs, batch="nightly-2026-11-30")`` records each input that returned a value, keyed
by the hash of the function reference and the input's encoded arguments, with the encoded
value. Running the same map again (after a crash, SIGKILL or Ctrl-C) looks every input up
first: a recorded one yields its recorded value and runs nothing; only the others run. An
input that raised is not recorded, so a rerun tries it again.

Where the journal lives:

- with an object store configured (``FLYJOBS_STORE``), in the store: one object per finished
  input, ``batches/<name>/<key>``, so a rerun from another host resumes too;
- otherwise in SQLite, ``.flyjobs/journal.sqlite3`` in the project (the folder of the nearest
  ``pyproject.toml``, else the working directory).

The values are written and read by the client only, decoded by the map's own ``pickle``
option; in the store, each is sealed with the result key first (`flyjobs._batches.resume`,
docs/threat-model.md), since whoever can write to the bucket can write a record.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import ConfigError

if TYPE_CHECKING:
    from .._results.store import Store
    from .._settings import Settings

__all__ = (
    "BatchInfo",
    "Journal",
    "SqliteJournal",
    "StoreJournal",
    "check_batch_name",
    "input_key",
    "open_journal",
    "sqlite_path",
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PREFIX = "batches"


def check_batch_name(name: str) -> str:
    """`name` if it can name a batch (letters, digits, ``.``, ``_``, ``-``; at most 128).

    :raises ConfigError: naming the rule.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"batch={name!r}: a batch name is 1-128 letters, digits, '.', '_' or '-', starting"
            " with a letter or digit (for example batch='nightly-2026-11-30')"
        )
    return name


#: The key of what a batch's runs spent (USD): not an input, so never counted as one (an
#: input's key is a sha256 in hex).
SPENT_KEY = "spent_usd"


def input_key(fn_ref: str, arguments: bytes) -> str:
    """The journal key of one input: the SHA-256 of the function and its encoded arguments."""
    return hashlib.sha256(fn_ref.encode() + b"\0" + arguments).hexdigest()


@dataclass(frozen=True)
class BatchInfo:
    """One journaled batch: its name, how many inputs it finished, and its last change."""

    name: str
    finished: int
    updated_at: float


class Journal(abc.ABC):
    """The finished inputs of one named batch (see the module docstring).

    `lookup` and `record` may be called from any one thread at a time.
    """

    def __init__(self, name: str) -> None:
        self.name = check_batch_name(name)

    @abc.abstractmethod
    def lookup(self, key: str) -> bytes | None:
        """The encoded value recorded for `key`, or None."""

    @abc.abstractmethod
    def record(self, key: str, value: bytes) -> None:
        """Record that the input `key` returned the encoded `value`."""

    def close(self) -> None:  # noqa: B027 - only some journals hold a resource
        """Release what the journal holds."""


# --- SQLite ------------------------------------------------------------------------------------


def sqlite_path(settings: Settings) -> Path:
    """``.flyjobs/journal.sqlite3`` in the project: the folder of the nearest pyproject.toml,
    else the working directory."""
    root = settings.source.parent if settings.source is not None else Path.cwd()
    return root / ".flyjobs" / "journal.sqlite3"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS finished (
    batch TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (batch, key)
)
"""


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder")
        db = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"the batch journal {path} cannot be opened ({exc}): it must be a file flyjobs can"
            " create and write (move away what is there, or fix its permissions)"
        ) from None
    try:
        try:
            # WAL: a reader (`flyjobs batch ls`) never blocks the running batch, and each
            # commit is durable once it returns, so a SIGKILL loses no recorded input.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"{path} is not a flyjobs batch journal ({exc}): move it away or delete it"
                " (the batches it recorded then run from the start)"
            ) from None
        yield db
    finally:
        db.close()


class SqliteJournal(Journal):
    """A batch's journal in a local SQLite file."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path
        self._stack = contextlib.ExitStack()
        self._db = self._stack.enter_context(_connect(path))

    def lookup(self, key: str) -> bytes | None:
        row = self._db.execute(
            "SELECT value FROM finished WHERE batch = ? AND key = ?", (self.name, key)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def record(self, key: str, value: bytes) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO finished VALUES (?, ?, ?, ?)",
                (self.name, key, value, time.time()),
            )

    def close(self) -> None:
        self._stack.close()

    @staticmethod
    def batches(path: Path) -> list[BatchInfo]:
        """Every batch journaled in the file at `path`."""
        if not path.exists():
            return []
        with _connect(path) as db:
            rows = db.execute(
                "SELECT batch, SUM(key != ?), MAX(at) FROM finished GROUP BY batch ORDER BY batch",
                (SPENT_KEY,),
            ).fetchall()
        return [BatchInfo(name, count, at) for name, count, at in rows]

    @staticmethod
    def remove(path: Path, name: str) -> int:
        """Forget the batch `name`; return how many finished inputs it had."""
        if not path.exists():
            return 0
        with _connect(path) as db, db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM finished WHERE batch = ? AND key != ?", (name, SPENT_KEY)
            ).fetchone()
            db.execute("DELETE FROM finished WHERE batch = ?", (name,))
            return int(count)


# --- object store -------------------------------------------------------------------------------


class StoreJournal(Journal):
    """A batch's journal in the object store: ``batches/<name>/<key>`` per finished input.

    Its calls block (obstore's synchronous API): it is used from the map's own threads, never
    from the runtime's event loop.
    """

    def __init__(self, name: str, store: Store) -> None:
        super().__init__(name)
        self._store = store

    def _key(self, key: str) -> str:
        return f"{_PREFIX}/{self.name}/{key}"

    def lookup(self, key: str) -> bytes | None:
        return self._store.get_sync(self._key(key))

    def record(self, key: str, value: bytes) -> None:
        self._store.put_sync(self._key(key), value)

    @staticmethod
    async def batches(store: Store) -> list[BatchInfo]:
        """Every batch journaled in `store`."""
        found: dict[str, BatchInfo] = {}
        for info in await store.list(_PREFIX):
            name, key = info.key.split("/")[-2:]
            seen = found.get(name)
            count = (seen.finished if seen else 0) + (key != SPENT_KEY)
            updated = max(seen.updated_at, info.modified_at) if seen else info.modified_at
            found[name] = BatchInfo(name, count, updated)
        return [found[name] for name in sorted(found)]

    @staticmethod
    async def remove(store: Store, name: str) -> int:
        """Forget the batch `name` (delete its objects); return how many it had."""
        keys = [info.key for info in await store.list(f"{_PREFIX}/{check_batch_name(name)}")]
        for start in range(0, len(keys), 1000):
            await store.delete(keys[start : start + 1000])
        return sum(not key.endswith(f"/{SPENT_KEY}") for key in keys)


def open_journal(name: str, settings: Settings, store: Store | None) -> Journal:
    """The journal of batch `name`: in the store if there is one, else in SQLite.

    :raises ConfigError: `name` cannot name a batch.
    """
    if store is not None:
        return StoreJournal(name, store)
    return SqliteJournal(name, sqlite_path(settings))

"""The object store: an S3-compatible bucket (Tigris on Fly) where results outlive the caller.

Machines never hold credentials for it: the client presigns one URL per object a machine may
write (its result) or read (arguments too large to travel in the machine config), each expiring
with the call. The client itself reads, writes, lists and deletes with the credentials that
``fly storage create`` sets (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``, ``BUCKET_NAME``).

The S3 library is obstore (the Rust ``object_store`` crate's Python binding): about 5 ms to
import against ~170 ms for boto3 (plus ~190 ms for its first client) or ~200 ms for minio,
native asyncio, and presigning built in. It is imported only when a store is configured.

Object layout under the store's prefix::

    results/<call_id>     a call's result envelope, PUT by the worker through a presigned URL
    args/<call_id>        arguments over the inline limit, read by the worker through one
    calls/<call_id>       what `Call.from_id` needs to find a detached call again
    batches/<name>/<key>  a resumable batch's journal, one finished input per object
    chunks/<machine>/<n>  a store-mode batch machine's next inputs (`flyjobs._results.chunks`)
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .._exceptions import ConfigError, TransportError

if TYPE_CHECKING:
    from obstore.store import S3Store

__all__ = (
    "DEFAULT_ENDPOINT",
    "STALE_OBJECT_AGE_S",
    "ObjectInfo",
    "Store",
    "StoreConfig",
    "collect_stale_objects",
)

logger = logging.getLogger("flyjobs.store")

#: Where Tigris answers when ``AWS_ENDPOINT_URL_S3`` is not set.
DEFAULT_ENDPOINT = "https://fly.storage.tigris.dev"
#: Prefix used when only ``BUCKET_NAME`` names the store.
DEFAULT_PREFIX = "flyjobs"
#: Age (s) after which a call's objects (``results/``, ``args/``, ``calls/``) count as stale for
#: `collect_stale_objects`: a week, so a detached call's result waits that long to be read.
#: Batch journals (``batches/``) are never stale: ``flyjobs batch rm`` removes them.
STALE_OBJECT_AGE_S = 7 * 24 * 3600.0
#: The key prefixes of a call's own objects (see the module docstring).
CALL_PREFIXES = ("results", "args", "calls", "chunks")
#: Seconds one store request may take before it counts as failed.
_REQUEST_TIMEOUT_S = 60.0
#: Seconds a clean-up delete may take when a call ends.
_CLEANUP_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """Where the store is and how to reach it.

    :ivar bucket: the bucket name.
    :ivar prefix: the key prefix every flyjobs object lives under (no leading or trailing ``/``).
    :ivar endpoint: the S3 endpoint URL (``AWS_ENDPOINT_URL_S3``; Tigris by default).
    :ivar region: the signing region (``AWS_REGION``; Tigris takes ``auto``).
    :ivar access_key_id: ``AWS_ACCESS_KEY_ID``.
    :ivar secret_access_key: ``AWS_SECRET_ACCESS_KEY``; never shown in a repr.
    """

    bucket: str
    prefix: str
    endpoint: str = DEFAULT_ENDPOINT
    region: str = "auto"
    access_key_id: str = dataclasses.field(default="", repr=False)
    secret_access_key: str = dataclasses.field(default="", repr=False)

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @classmethod
    def load(
        cls,
        store: str | None,
        environ: Mapping[str, str] | None = None,
        *,
        embedded: bool = False,
    ) -> StoreConfig | None:
        """The store named by ``store`` (``FLYJOBS_STORE`` / ``[tool.flyjobs] store``), else by
        ``BUCKET_NAME`` (as ``s3://$BUCKET_NAME/flyjobs``); None when neither is set.

        :param embedded: calls run on the embedded emulator (`Settings.embedded`): then only
            ``store`` names one. ``BUCKET_NAME`` is what `fly storage create` exports for Fly;
            one left in a shell must not take a local run to a remote bucket, nor fail it.
        :raises ConfigError: the URL is not ``s3://bucket[/prefix]``, or credentials are missing.
        """
        env = os.environ if environ is None else environ
        bucket = None if embedded else env.get("BUCKET_NAME")
        url = store or (f"s3://{bucket}/{DEFAULT_PREFIX}" if bucket else "")
        if not url:
            return None
        bucket, prefix = _parse_url(url)
        missing = [v for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not env.get(v)]
        if missing:
            raise ConfigError(
                f"the store {url} needs credentials: set {' and '.join(missing)} (`fly storage"
                " create` prints them; `fly secrets` does not hand them to this host)"
            )
        return cls(
            bucket=bucket,
            prefix=prefix,
            endpoint=env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
            or DEFAULT_ENDPOINT,
            region=env.get("AWS_REGION") or "auto",
            access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )


def _parse_url(url: str) -> tuple[str, str]:
    scheme, sep, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3" or not sep or not bucket:
        raise ConfigError(
            "FLYJOBS_STORE (or [tool.flyjobs] store) must look like s3://bucket/prefix,"
            f" not {url!r}"
        )
    return bucket, prefix.strip("/")


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key (under the store's prefix) and last change (unix s)."""

    key: str
    modified_at: float
    size: int


class Store:
    """Client-side access to the bucket: presign, get, put, delete, list.

    Keys are relative to the configured prefix. The async methods run on asyncio (obstore's
    runtime); errors of the store become `TransportError` naming the operation and the key.
    """

    def __init__(self, config: StoreConfig) -> None:
        try:
            # lazy: optional dependency (only a process with a store pays for the S3 client)
            from obstore.store import S3Store
        except ImportError:
            raise ConfigError(
                f"the store {config.url} needs the S3 client flyjobs uses: install it with"
                " `pip install 'flyjobs[store]'`"
            ) from None

        self.config = config
        #: results that came in another call's bundle (`flyjobs._wire.chunk`), by call id,
        #: until their tickets take them (each still checked by its own ticket)
        self.bundled: dict[str, bytes] = {}
        self._s3: S3Store = S3Store(
            config.bucket,
            prefix=config.prefix or None,
            endpoint=config.endpoint,
            region=config.region,
            access_key_id=config.access_key_id,
            secret_access_key=config.secret_access_key,
            virtual_hosted_style_request=False,
            client_options={
                "allow_http": config.endpoint.startswith("http://"),
                "timeout": f"{_REQUEST_TIMEOUT_S:g}s",
            },
        )

    def __repr__(self) -> str:
        return f"<Store {self.config.url} at {self.config.endpoint}>"

    def presign(self, method: str, key: str, *, expires_at: float) -> str:
        """A URL that lets its holder ``method`` (``PUT`` or ``GET``) the object `key` until
        `expires_at` (unix s), without credentials."""
        # lazy: optional dependency (only a process with a store loads it)
        import obstore

        seconds = max(1, math.ceil(expires_at - time.time()))
        verb: Any = method
        return obstore.sign(self._s3, verb, key, datetime.timedelta(seconds=seconds))

    async def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such object."""
        # lazy: optional dependency (only a process with a store loads it)
        import obstore

        try:
            result = await obstore.get_async(self._s3, key)
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise _failed("read", key, exc) from exc

    async def put(self, key: str, data: bytes) -> None:
        """Write (or overwrite) the object `key`."""
        # lazy: optional dependency (only a process with a store loads it)
        import obstore

        try:
            await obstore.put_async(self._s3, key, data)
        except Exception as exc:
            raise _failed("write", key, exc) from exc

    async def delete(self, keys: str | Sequence[str]) -> None:
        """Delete objects; a key with no object is not an error."""
        # lazy: optional dependency (only a process with a store loads it)
        import obstore

        if not keys:
            return
        try:
            await obstore.delete_async(self._s3, keys)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise _failed("delete", str(keys), exc) from exc

    def get_sync(self, key: str) -> bytes | None:
        """`get`, blocking: for threads other than the runtime's event loop."""
        # lazy: optional dependency (only a process with a store loads it)
        import obstore

        try:
            return bytes(obstore.get(self._s3, key).bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise _failed("read", key, exc) from exc

    def put_sync(self, key: str, data: bytes) -> None:
        """`put`, blocking: for threads other than the runtime's event loop."""
        # lazy: optional dependency (only a process with a store loads it)
        import obstore

        try:
            obstore.put(self._s3, key, data)
        except Exception as exc:
            raise _failed("write", key, exc) from exc

    def put_once_sync(self, key: str, data: bytes) -> bool:
        """Create the object `key` with `data` unless it exists (a HEAD first, then a
        create-only put, so two writers never overwrite each other); return True when this
        call created it. Blocking: for threads other than the runtime's event loop."""
        # lazy: optional dependency (only a process with a store loads it)
        import obstore
        from obstore.exceptions import AlreadyExistsError  # lazy: as above

        try:
            obstore.head(self._s3, key)
            return False
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise _failed("read", key, exc) from exc
        try:
            obstore.put(self._s3, key, data, mode="create")
        except AlreadyExistsError:
            return False
        except Exception as exc:
            raise _failed("write", key, exc) from exc
        return True

    async def discard(self, keys: str | Sequence[str]) -> None:
        """Delete objects as clean-up: shielded from cancellation, bounded in time, and a
        failure is logged, not raised (a lifecycle rule or ``flyjobs gc`` removes leftovers)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT_S):
            try:
                await self.delete(keys)
            except TransportError as exc:
                logger.warning("%s", exc)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix` (relative to the store's prefix); a key
        with a control character (which anyone who writes the bucket can make) is skipped."""
        # lazy: optional dependency (only a process with a store loads it)
        import obstore
        from obstore.exceptions import InvalidPathError  # lazy: optional dependency

        found: list[ObjectInfo] = []
        try:
            async for batch in obstore.list(self._s3, prefix.rstrip("/") or None):
                for meta in batch:
                    found.append(
                        ObjectInfo(
                            key=str(meta["path"]),
                            modified_at=meta["last_modified"].timestamp(),
                            size=int(meta["size"]),
                        )
                    )
        except InvalidPathError:
            # obstore drops the whole page of such a key and ends: list without it. Lazy:
            # only such a listing needs this fallback.
            from .s3_list import list_objects

            listed = await list_objects(self.config, prefix)
            return [ObjectInfo(key, at, size) for key, at, size in listed]
        except Exception as exc:
            raise _failed("list", prefix, exc) from exc
        return found


def _failed(what: str, key: str, exc: Exception) -> TransportError:
    # obstore's messages carry the request URL, never the credentials.
    return TransportError(f"the object store could not {what} {key}: {type(exc).__name__}: {exc}")


async def collect_stale_objects(
    store: Store,
    *,
    max_age_s: float = STALE_OBJECT_AGE_S,
    dry_run: bool = False,
    now: float | None = None,
) -> list[ObjectInfo]:
    """Find the call objects (results, spilled arguments, detached-call records) older than
    `max_age_s` and, unless `dry_run`, delete them; return them. A call that ends normally
    deletes its own: these are what crashed or killed clients, and unread detached results,
    left behind. Batch journals are never touched.
    """
    cutoff = (time.time() if now is None else now) - max_age_s
    stale = [
        info
        for prefix in CALL_PREFIXES
        for info in await store.list(prefix)
        if info.modified_at < cutoff
    ]
    if not dry_run:
        keys = [info.key for info in stale]
        for start in range(0, len(keys), 1000):
            await store.delete(keys[start : start + 1000])
    return stale

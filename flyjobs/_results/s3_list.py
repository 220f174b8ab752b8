"""Listing a bucket where obstore cannot: keys with control characters.

obstore (the ``object_store`` crate) refuses a whole page of a listing (up to 1,000 keys) when
one key in it holds a control character (``InvalidPathError``), and ends the listing there.
Anyone who can write the bucket can make such a key, so `flyjobs._results.store.Store.list` falls
back to this: S3's ``ListObjectsV2`` signed here (AWS Signature Version 4) and read with its keys
URL-encoded, which skips each key with a control character and logs that it did (escaped).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import urllib.parse
from typing import TYPE_CHECKING
from xml.etree import ElementTree

import httpx

from .._exceptions import TransportError
from .._output.call_lines import shown

if TYPE_CHECKING:
    from .store import StoreConfig

__all__ = ("list_objects",)

logger = logging.getLogger("flyjobs.store")

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Pages read at most (1,000 keys each).
_MAX_PAGES = 100_000


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def _canonical_query(query: dict[str, str]) -> str:
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_headers(
    config: StoreConfig, path: str, query: dict[str, str], now: datetime.datetime
) -> dict[str, str]:
    """The headers of an AWS Signature Version 4 ``GET`` of ``path`` with ``query``."""
    host = urllib.parse.urlsplit(config.endpoint).netloc
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{config.region}/s3/aws4_request"
    headers = {"host": host, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": amz_date}
    names = ";".join(headers)
    canonical = "\n".join(
        [
            "GET",
            path,
            _canonical_query(query),
            *(f"{name}:{value}" for name, value in headers.items()),
            "",
            names,
            _EMPTY_SHA256,
        ]
    )
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + config.secret_access_key).encode()
    for part in (amz_date[:8], config.region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={config.access_key_id}/{scope},"
        f" SignedHeaders={names}, Signature={signature}"
    )
    return {**headers, "authorization": authorization}


async def list_objects(config: StoreConfig, prefix: str) -> list[tuple[str, float, int]]:
    """(key relative to the store's prefix, last change in unix s, size in bytes) of every
    object under ``prefix``, skipping (and logging, escaped) each key with a control character.

    :raises TransportError: the store answered with an error or a body that is no listing.
    """

    root = f"{config.prefix}/" if config.prefix else ""
    path = "/" + _quote(config.bucket)
    query = {"list-type": "2", "prefix": root + prefix.rstrip("/"), "encoding-type": "url"}
    found: list[tuple[str, float, int]] = []
    async with httpx.AsyncClient(base_url=config.endpoint.rstrip("/"), timeout=60.0) as http:
        for _ in range(_MAX_PAGES):
            now = datetime.datetime.now(datetime.UTC)
            headers = signed_headers(config, path, query, now)
            try:
                # The query as signed, encoded the same way.
                url = f"{path}?{_canonical_query(query)}"
                response = await http.get(url, headers=headers)
                response.raise_for_status()
                page = ElementTree.fromstring(response.content)
            except (httpx.HTTPError, ElementTree.ParseError) as exc:
                raise TransportError(
                    f"the object store could not list {prefix}: {type(exc).__name__}"
                ) from None
            for item in page.iter(f"{_NS}Contents"):
                key = urllib.parse.unquote(item.findtext(f"{_NS}Key") or "")
                if not key.startswith(root):
                    continue
                if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in key):
                    logger.warning(
                        "skipped the key %s: it holds a control character", shown(key, output=False)
                    )
                    continue
                modified = item.findtext(f"{_NS}LastModified") or ""
                at = datetime.datetime.fromisoformat(modified.replace("Z", "+00:00"))
                found.append(
                    (key[len(root) :], at.timestamp(), int(item.findtext(f"{_NS}Size") or 0))
                )
            token = page.findtext(f"{_NS}NextContinuationToken")
            if page.findtext(f"{_NS}IsTruncated") != "true" or not token:
                break
            query["continuation-token"] = token
    return found

"""Identifiers and timestamps shaped like Fly's: machine ids, ULID versions, 6PN addresses."""

from __future__ import annotations

import datetime as dt
import secrets
import time

__all__ = (
    "machine_id",
    "machine_name",
    "new_nonce",
    "now_ms",
    "private_ip",
    "rfc3339",
    "rfc3339_ms",
    "ulid",
)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ADJECTIVES = (
    "autumn", "billowing", "bold", "broken", "cool", "crimson", "damp", "dark", "dawn",
    "delicate", "divine", "dry", "falling", "frosty", "holy", "icy", "late", "lingering",
    "little", "lively", "misty", "morning", "muddy", "old", "patient", "polished", "proud",
    "purple", "quiet", "quirky", "red", "restless", "rough", "shy", "silent", "small",
    "snowy", "solitary", "sparkling", "spring", "still", "summer", "twilight", "wandering",
    "weathered", "white", "wild", "winter", "young",
)  # fmt: skip
_NOUNS = (
    "bird", "breeze", "brook", "bush", "butterfly", "cherry", "cloud", "darkness", "dawn",
    "dew", "dream", "dust", "feather", "field", "fire", "firefly", "flower", "fog", "forest",
    "frog", "glade", "glitter", "grass", "haze", "hill", "lake", "leaf", "meadow", "moon",
    "morning", "mountain", "night", "paper", "pine", "pond", "rain", "resonance", "river",
    "sea", "shadow", "shape", "silence", "sky", "smoke", "snow", "sound", "star", "sun",
    "sunset", "surf", "thunder", "tree", "violet", "voice", "water", "waterfall", "wave",
    "wildflower", "wind", "wood",
)  # fmt: skip


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds, as Fly stamps events."""
    return time.time_ns() // 1_000_000


def rfc3339(unix_s: float) -> str:
    """RFC 3339 UTC timestamp with second precision (``2022-05-23T22:48:21Z``)."""
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_ms(unix_ms: int) -> str:
    """RFC 3339 UTC timestamp with milliseconds (``2022-05-23T22:48:21.255Z``): how Fly
    sends an exit event's ``exited_at``, which fly-go decodes as a Go ``time.Time``."""
    seconds, millis = divmod(unix_ms, 1000)
    return f"{dt.datetime.fromtimestamp(seconds, dt.UTC):%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def machine_id() -> str:
    """A machine id: 14 lowercase hex characters."""
    return secrets.token_hex(7)


def machine_name() -> str:
    """A generated machine name such as ``quirky-meadow-4821``."""
    adjective = secrets.choice(_ADJECTIVES)
    noun = secrets.choice(_NOUNS)
    return f"{adjective}-{noun}-{secrets.randbelow(9000) + 1000}"


def ulid() -> str:
    """A 26-character ULID (48-bit millisecond time + 80 random bits, Crockford base32).

    Used for machine versions (``instance_id``) and event ids; later ids sort after earlier ones
    except within the same millisecond.
    """
    value = (now_ms() << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_nonce() -> str:
    """A lease nonce: 12 hex characters, as in Fly's examples."""
    return secrets.token_hex(6)


def private_ip() -> str:
    """A 6PN-style private IPv6 address (``fdaa:0:…``)."""
    words = [f"{secrets.randbits(16):x}" for _ in range(4)]
    return f"fdaa:0:3ec2:a7b:{':'.join(words)}"

"""Where ``flyjobs dev`` takes its accepted token from, without ever showing it.

In order: ``--token``, ``$FLYJOBS_DEV_TOKEN``, then a private token file (created with a random
token on first use, so a bare ``flyjobs dev`` still starts in one command). ``$FLY_API_TOKEN``
is never adopted: it is the user's real Fly token, and the emulator would print and accept it.
"""

from __future__ import annotations

import os
import secrets
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

import click

__all__ = ("TOKEN_ENV", "TokenSource", "default_token_file", "redact", "resolve_token")

#: Environment variable holding the token ``flyjobs dev`` accepts.
TOKEN_ENV = "FLYJOBS_DEV_TOKEN"
#: Characters of a token shown (at each end) where a token must be named.
_SHOWN = 4


@dataclass(frozen=True, slots=True)
class TokenSource:
    """The accepted tokens and how to tell a user where to find them.

    :ivar tokens: the accepted tokens.
    :ivar shell_value: what to put after ``FLY_API_TOKEN=`` in a shell, never the token itself
        (``"$(cat /path)"`` or ``"$FLYJOBS_DEV_TOKEN"``).
    :ivar note: a line for stderr (a token file was created, or ``$FLY_API_TOKEN`` ignored).
    """

    tokens: list[str]
    shell_value: str
    note: str = ""

    def __repr__(self) -> str:
        shown = ", ".join(redact(token) for token in self.tokens)
        return f"TokenSource(tokens=[{shown}], shell_value={self.shell_value!r})"


def redact(token: str) -> str:
    """A token shown safely: its length and at most a few characters at each end."""
    if len(token) < 4 * _SHOWN:
        return f"<token of {len(token)} characters>"
    return f"{token[:_SHOWN]}…{token[-_SHOWN:]}"


def default_token_file() -> Path:
    """``$XDG_CONFIG_HOME/flyjobs/dev-token`` (``~/.config/flyjobs/dev-token``)."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "flyjobs" / "dev-token"


def resolve_token(given: tuple[str, ...], from_env: str | None, token_file: Path) -> TokenSource:
    """The tokens to accept: ``given`` (``--token``), else ``from_env``, else ``token_file``.

    :raises click.UsageError: when the token file is readable by others than its owner, or
        is empty.
    """
    note = ""
    if os.environ.get("FLY_API_TOKEN") and not given and not from_env:
        note = (
            "note: FLY_API_TOKEN is set but not used; flyjobs dev accepts only its own token "
            f"(--token, ${TOKEN_ENV} or the token file)"
        )
    if given:
        return TokenSource(list(given), "<the token given with --token>")
    if from_env:
        return TokenSource([from_env], f'"${TOKEN_ENV}"')
    shell_value = f'"$(cat {shlex.quote(str(token_file))})"'
    if not token_file.exists():
        _create_token_file(token_file)
        created = f"created the token file {token_file} (mode 600)"
        note = f"{created}\n{note}" if note else created
    return TokenSource([_read_token_file(token_file)], shell_value, note)


def _create_token_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secrets.token_urlsafe(24) + "\n")


def _read_token_file(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise click.UsageError(
            f"the token file {path} can be read by other users (mode {stat.S_IMODE(mode):o}): "
            f"run `chmod 600 {path}`"
        )
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise click.UsageError(f"the token file {path} is empty: write a token into it")
    return token

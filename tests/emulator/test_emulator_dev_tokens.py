"""``flyjobs dev`` and tokens: the user's real Fly token is never adopted or shown, the
emulator's own token is never printed, and no repr holds a token."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from flyjobs.emulator import EmulatorConfig, dev_command, serve_in_thread
from flyjobs.emulator._tokens import resolve_token

REAL_FLY_TOKEN = "FlyV1 fm2_real-fly-token-of-the-user-0123456789"
DEV = "from flyjobs.emulator import dev_command; dev_command()"


def _start_dev(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("FLYJOBS_DEV_TOKEN",)}
    environ.update(XDG_CONFIG_HOME=str(tmp_path / "config"), **env)
    argv = [sys.executable, "-c", DEV, "--port", "0", "--data-dir", str(tmp_path / "d"), *args]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ
    )


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def _banner(process: subprocess.Popen[str]) -> tuple[str, str]:
    assert process.stdout is not None
    url = process.stdout.readline().strip().rsplit(" ", 1)[1]
    return url, process.stdout.readline().strip()


def _finish(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    return out + err


def _status(url: str, token: str) -> int:
    return httpx.get(f"{url}/v1/apps/x", headers={"Authorization": f"Bearer {token}"}).status_code


def test_fly_api_token_in_the_environment_is_never_adopted_or_printed(
    tmp_path: Path, stop: list[subprocess.Popen[str]]
) -> None:
    process = _start_dev(tmp_path, FLY_API_TOKEN=REAL_FLY_TOKEN)
    stop.append(process)
    url, hint = _banner(process)
    token_file = tmp_path / "config" / "flyjobs" / "dev-token"
    assert hint == f'export FLY_API_HOSTNAME={url} FLY_API_TOKEN="$(cat {token_file})"'
    assert _status(url, REAL_FLY_TOKEN) == 401
    assert _status(url, "fm2_real-fly-token-of-the-user-0123456789") == 401
    # The one-command start: a private token file was made, and its token works.
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert _status(url, token) == 404
    output = _finish(process)
    assert "real-fly-token" not in output
    assert token not in output
    assert "FLY_API_TOKEN is set but not used" in output
    assert f"created the token file {token_file}" in output


def test_token_file_is_reused_and_flyjobs_dev_token_wins(
    tmp_path: Path, stop: list[subprocess.Popen[str]]
) -> None:
    token_file = tmp_path / "config" / "flyjobs" / "dev-token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("token-from-the-file\n")
    token_file.chmod(0o600)
    process = _start_dev(tmp_path)
    stop.append(process)
    url, _ = _banner(process)
    assert _status(url, "token-from-the-file") == 404
    assert "token-from-the-file" not in _finish(process)

    process = _start_dev(tmp_path, FLYJOBS_DEV_TOKEN="token-from-env")
    stop.append(process)
    url, hint = _banner(process)
    assert hint.endswith('FLY_API_TOKEN="$FLYJOBS_DEV_TOKEN"')
    assert _status(url, "token-from-env") == 404
    assert _status(url, "token-from-the-file") == 401
    assert "token-from-env" not in _finish(process)


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "dev-token"
    token_file.write_text("shared-token\n")
    token_file.chmod(0o644)
    environ = {k: v for k, v in os.environ.items() if k not in ("FLYJOBS_DEV_TOKEN",)}
    result = CliRunner().invoke(
        dev_command, ["--port", "0", "--token-file", str(token_file)], env=environ
    )
    assert result.exit_code == 2
    assert f"chmod 600 {token_file}" in result.output
    assert "shared-token" not in result.output


def test_token_given_on_the_command_line_is_not_printed(
    tmp_path: Path, stop: list[subprocess.Popen[str]]
) -> None:
    process = _start_dev(tmp_path, "--token", "cli-token-value")
    stop.append(process)
    url, _ = _banner(process)
    assert _status(url, "cli-token-value") == 404
    assert "cli-token-value" not in _finish(process)


def test_help_warns_that_token_shows_in_ps() -> None:
    result = CliRunner().invoke(dev_command, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Visible to every user in `ps`" in text
    assert "$FLY_API_TOKEN is never used" in text
    assert "not isolated" in text


def test_no_repr_holds_a_token(tmp_path: Path) -> None:
    config = EmulatorConfig(tokens=["repr-secret-token"], data_dir=tmp_path)
    assert "repr-secret-token" not in repr(config)
    assert "repr-secret-token" not in str(config)
    with serve_in_thread(config) as running:
        assert running.token == "repr-secret-token"
        assert "repr-secret-token" not in repr(running)
    source = resolve_token(("repr-secret-token",), None, tmp_path / "unused")
    assert "repr-secret-token" not in repr(source)

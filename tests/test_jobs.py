"""Telling strays from the metadata of flyjobs machines, under an injected clock."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from flyjobs._calls.fleet import JobMachine, client_identity, client_is_gone, find_strays


def _job(
    name: str, *, deadline: float | None = None, client: str = "", state: str = "started"
) -> JobMachine:
    return JobMachine(
        id=name, name=name, state=state, region="lcl", call_id=name, batch_id="",
        function="m:f", deadline=deadline, client=client, created_at=0.0,
    )  # fmt: skip


def test_a_machine_is_a_stray_only_past_its_deadline_and_grace() -> None:
    jobs = [
        _job("on-time", deadline=1000.0),
        _job("none"),
        _job("gone", deadline=1.0, state="destroyed"),
    ]
    assert find_strays(jobs, now=1059.0, grace_s=60, is_gone=lambda _: False) == []
    (stray,) = find_strays(jobs, now=1061.0, grace_s=60, is_gone=lambda _: False)
    assert stray.machine.id == "on-time" and "deadline by 61 s" in stray.reason


def test_a_machine_whose_client_is_gone_is_a_stray() -> None:
    jobs = [_job("a", deadline=5000.0, client="dead"), _job("b", deadline=5000.0, client="alive")]
    (stray,) = find_strays(jobs, now=0.0, is_gone=lambda client: client == "dead")
    assert stray.machine.id == "a" and "dead is gone" in stray.reason


def test_client_liveness_is_told_only_on_this_host() -> None:
    assert not client_is_gone(client_identity())
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    host = socket.gethostname()
    assert client_is_gone(f"{host}/{process.pid}/1")
    # A live pid with another start time is another process that reused the pid.
    assert client_is_gone(f"{host}/{os.getpid()}/1")
    assert not client_is_gone(f"elsewhere/{process.pid}/1")
    assert not client_is_gone("garbage")

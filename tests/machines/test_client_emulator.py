"""Every client method against the local emulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import secrets
from typing import Any

import anyio
import pytest
from _mc_helpers import client_for, quick_config, sleeper_config

from flyjobs._exceptions import (
    AuthenticationError,
    ConflictError,
    LeaseHeldError,
    NotFoundError,
    PreconditionFailedError,
    UnprocessableError,
    WaitTimeoutError,
)
from flyjobs.emulator import RunningEmulator
from flyjobs.machines import Lease, MachineConfig, MachinesClient

pytestmark = pytest.mark.anyio


async def _started(fly: MachinesClient, app: str, config: MachineConfig | None = None) -> str:
    machine = await fly.create_machine(app, config or sleeper_config())
    await fly.wait(app, machine.id, "started", timeout_s=30)
    return machine.id


# -- apps -------------------------------------------------------------------------------------


async def test_app_lifecycle(fly: MachinesClient) -> None:
    name = f"t-{secrets.token_hex(4)}"
    created = await fly.create_app(name)
    assert created.name == name and created.id
    app = await fly.get_app(name)
    assert (app.id, app.name) == (created.id, name)
    assert app.organization is not None and app.organization.slug == "personal"
    assert name in [a.name for a in await fly.list_apps("personal")]
    with pytest.raises(UnprocessableError) as taken:
        await fly.create_app(name)
    assert taken.value.code == "name_taken"
    await fly.delete_app(name)
    with pytest.raises(NotFoundError):
        await fly.get_app(name)


async def test_wrong_token_is_an_authentication_error(emulator: RunningEmulator) -> None:
    async with MachinesClient("not-the-token", base_url=emulator.url) as fly:
        with pytest.raises(AuthenticationError):
            await fly.list_apps()


# -- machines ---------------------------------------------------------------------------------


async def test_ephemeral_machine_runs_to_destroyed(fly: MachinesClient, app: str) -> None:
    machine = await fly.create_machine(app, quick_config(), name="job-1", region="lcl")
    assert (machine.name, machine.region) == ("job-1", "lcl")
    assert machine.config is not None and machine.config.auto_destroy
    result = await fly.wait(app, machine.id, "destroyed", timeout_s=30)
    assert result.ok and result.state == "destroyed"
    gone = await fly.get_machine(app, machine.id)
    assert gone.state == "destroyed"
    assert gone.exit_event is not None and gone.exit_event.exit_code == 0
    assert [e.type for e in gone.events][0] == "destroy"
    assert machine.id not in [m.id for m in await fly.list_machines(app)]
    listed = await fly.list_machines(app, include_deleted=True)
    assert [m.name for m in listed if m.id == machine.id] == ["job-1"]


async def test_wait_accepts_several_states(fly: MachinesClient, app: str) -> None:
    machine = await fly.create_machine(app, quick_config(auto_destroy=False))
    result = await fly.wait(app, machine.id, ("stopped", "failed", "destroyed"), timeout_s=30)
    assert result.state in ("stopped", "failed", "destroyed")
    await fly.delete_machine(app, machine.id)


async def test_wait_timeout_and_gone_machine(fly: MachinesClient, app: str) -> None:
    machine_id = await _started(fly, app)
    with pytest.raises(WaitTimeoutError, match="stopped"):
        await fly.wait(app, machine_id, "stopped", timeout_s=1.2)
    assert (await fly.wait(app, "00000000000000", "destroyed")).state == "destroyed"
    with pytest.raises(NotFoundError):
        await fly.wait(app, "00000000000000", "started", timeout_s=2)


async def test_list_filters(fly: MachinesClient, app: str) -> None:
    tagged = await fly.create_machine(app, sleeper_config(metadata={"batch": "b1"}))
    other = await fly.create_machine(app, sleeper_config(metadata={"batch": "b2"}))
    for machine_id in (tagged.id, other.id):
        await fly.wait(app, machine_id, timeout_s=30)
    assert [m.id for m in await fly.list_machines(app, metadata={"batch": "b1"})] == [tagged.id]
    started = await fly.list_machines(app, state=["started", "stopped"], region="lcl")
    assert {m.id for m in started} == {tagged.id, other.id}
    assert await fly.list_machines(app, state="stopped") == []
    assert len(await fly.list_machines(app, summary=True)) == 2


async def test_stop_start_restart_signal(fly: MachinesClient, app: str) -> None:
    machine_id = await _started(fly, app)
    await fly.stop_machine(app, machine_id, signal="SIGTERM", timeout_s=2)
    await fly.wait(app, machine_id, "stopped", timeout_s=30)
    stopped = await fly.get_machine(app, machine_id)
    assert stopped.exit_event is not None and stopped.exit_event.requested_stop
    assert (await fly.start_machine(app, machine_id)).previous_state == "stopped"
    await fly.wait(app, machine_id, "started", timeout_s=30)
    await fly.restart_machine(app, machine_id, signal="SIGTERM", timeout_s=1)
    await fly.wait(app, machine_id, "started", timeout_s=30)
    await fly.signal_machine(app, machine_id, "SIGUSR1")
    await fly.wait(app, machine_id, "stopped", timeout_s=30)  # SIGUSR1 ends `sleep`
    events = await fly.list_events(app, machine_id, limit=3)
    assert len(events) == 3 and events[0].timestamp >= events[-1].timestamp


async def test_update_with_version_guard(fly: MachinesClient, app: str) -> None:
    machine_id = await _started(fly, app)
    before = await fly.get_machine(app, machine_id)
    assert before.version
    updated = await fly.update_machine(
        app, machine_id, sleeper_config(env={"STAGE": "2"}), current_version=before.version
    )
    assert updated.config is not None and updated.config.env == {"STAGE": "2"}
    assert updated.version != before.version
    with pytest.raises(ConflictError):
        await fly.update_machine(app, machine_id, sleeper_config(), current_version=before.version)


async def test_delete_needs_force_while_running(fly: MachinesClient, app: str) -> None:
    machine_id = await _started(fly, app)
    with pytest.raises(ConflictError):
        await fly.delete_machine(app, machine_id)
    await fly.delete_machine(app, machine_id, force=True)
    assert (await fly.wait(app, machine_id, "destroyed", timeout_s=30)).state == "destroyed"


async def test_exec(fly: MachinesClient, app: str) -> None:
    machine_id = await _started(fly, app)
    ok = await fly.exec(app, machine_id, ["python", "-c", "print('hi')"], timeout_s=10)
    assert (ok.exit_code, ok.stdout) == (0, "hi\n")
    failed = await fly.exec(app, machine_id, ["python", "-c", "raise SystemExit(3)"])
    assert failed.exit_code == 3
    echoed = await fly.exec(app, machine_id, ["python", "-c", "print(input())"], stdin="x\n")
    assert echoed.stdout == "x\n"


async def test_temporary_machine_is_destroyed_however_the_block_ends(
    fly: MachinesClient, app: str
) -> None:
    with pytest.raises(KeyError):
        async with fly.temporary_machine(app, sleeper_config()) as machine:
            await fly.wait(app, machine.id, timeout_s=30)
            raise KeyError("boom")
    assert (await fly.get_machine(app, machine.id)).state == "destroyed"


# -- metadata ---------------------------------------------------------------------------------


async def test_metadata(fly: MachinesClient, app: str) -> None:
    machine = await fly.create_machine(app, sleeper_config(metadata={"call": "c1"}))
    assert await fly.get_metadata(app, machine.id) == {"call": "c1"}
    await fly.set_metadata_value(app, machine.id, "owner name", "me")
    assert await fly.get_metadata_value(app, machine.id, "owner name") == "me"
    await fly.update_metadata(app, machine.id, {"a": "1", "call": None})
    assert await fly.get_metadata(app, machine.id) == {"owner name": "me", "a": "1"}
    await fly.delete_metadata_value(app, machine.id, "a")
    with pytest.raises(NotFoundError):
        await fly.get_metadata_value(app, machine.id, "a")
    with pytest.raises(PreconditionFailedError):
        await fly.update_metadata(app, machine.id, {"b": "2"}, machine_version="01" + "A" * 24)
    current = (await fly.get_machine(app, machine.id)).version
    await fly.update_metadata(app, machine.id, {"b": "2"}, machine_version=current)
    assert (await fly.get_machine(app, machine.id)).version == current


# -- leases -----------------------------------------------------------------------------------


async def test_lease_block_sends_the_nonce_and_locks_others_out(
    fly: MachinesClient, app: str, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine_id = await _started(fly, app)
    # The block's refresher extends the lease before its TTL runs out: the test waits for
    # the emulator's answer to a refresh, not for the TTL.
    refreshed = anyio.Event()
    refresh_lease = fly.refresh_lease

    async def refresh_and_tell(*args: Any, **kwargs: Any) -> Lease:
        lease = await refresh_lease(*args, **kwargs)
        refreshed.set()
        return lease

    monkeypatch.setattr(fly, "refresh_lease", refresh_and_tell)
    async with client_for(emulator) as other:
        async with fly.lease(app, machine_id, ttl_s=2, description="deploy") as held:
            assert held.nonce and not held.lost
            lease = await fly.get_lease(app, machine_id)
            assert lease.nonce == held.nonce
            assert lease.description is not None and lease.description.startswith("deploy [")
            with anyio.fail_after(30):  # a bound on a hung test; it refreshes every 0.67 s
                await refreshed.wait()
            refreshed_lease = await fly.get_lease(app, machine_id)
            assert refreshed_lease.nonce == held.nonce and not held.lost
            assert (refreshed_lease.expires_at or 0) >= (lease.expires_at or 0)
            with pytest.raises(LeaseHeldError):
                await other.stop_machine(app, machine_id)
            with pytest.raises(LeaseHeldError):
                await other.acquire_lease(app, machine_id)
            await fly.stop_machine(app, machine_id)  # the held nonce is sent by itself
            await fly.wait(app, machine_id, "stopped", timeout_s=30)
        with pytest.raises(NotFoundError):
            await fly.get_lease(app, machine_id)
        await other.start_machine(app, machine_id)


async def test_lease_block_passes_its_exception_through_and_releases(
    fly: MachinesClient, app: str
) -> None:
    machine_id = await _started(fly, app)
    with pytest.raises(KeyError):
        async with fly.lease(app, machine_id):
            raise KeyError("not wrapped in an ExceptionGroup")
    with pytest.raises(NotFoundError):
        await fly.get_lease(app, machine_id)


async def test_lease_endpoints(fly: MachinesClient, app: str) -> None:
    machine_id = await _started(fly, app)
    lease = await fly.acquire_lease(app, machine_id, ttl_s=5)
    assert lease.nonce and lease.owner
    refreshed = await fly.refresh_lease(app, machine_id, lease.nonce, ttl_s=30)
    assert refreshed.expires_at is not None and lease.expires_at is not None
    assert refreshed.expires_at > lease.expires_at
    with pytest.raises(LeaseHeldError):
        await fly.stop_machine(app, machine_id)
    await fly.stop_machine(app, machine_id, nonce=lease.nonce)
    await fly.release_lease(app, machine_id, lease.nonce)
    with pytest.raises(NotFoundError):
        await fly.get_lease(app, machine_id)


async def test_create_with_lease(fly: MachinesClient, app: str) -> None:
    machine = await fly.create_machine(app, sleeper_config(), lease_ttl_s=30)
    assert machine.nonce
    await fly.release_lease(app, machine.id, machine.nonce)


# -- secrets ----------------------------------------------------------------------------------


async def test_secrets(fly: MachinesClient, app: str) -> None:
    secret = await fly.set_secret(app, "DATABASE_URL", "postgres://u:pw@db/x")
    assert secret.name == "DATABASE_URL" and secret.digest
    assert "pw@db" not in repr(secret)
    listed = await fly.list_secrets(app, show_values=True)
    values = {s.name: s.value.get_secret_value() for s in listed if s.value is not None}
    assert values == {"DATABASE_URL": "postgres://u:pw@db/x"}
    assert "pw@db" not in repr(listed)
    await fly.delete_secret(app, "DATABASE_URL")
    assert await fly.list_secrets(app) == []


async def test_lease_is_released_when_the_block_is_cancelled(fly: MachinesClient, app: str) -> None:
    machine_id = await _started(fly, app)
    with anyio.move_on_after(0.3) as scope:
        async with fly.lease(app, machine_id, ttl_s=30):
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    with pytest.raises(NotFoundError):
        await fly.get_lease(app, machine_id)


# -- logs -------------------------------------------------------------------------------------


async def test_logs(fly: MachinesClient, app: str) -> None:
    script = "for i in range(5): print('line', i)"
    machine = await fly.create_machine(app, quick_config(init={"cmd": ["python", "-c", script]}))
    await fly.wait(app, machine.id, "destroyed", timeout_s=30)
    assert await fly.log_tail(app, machine.id, lines=2) == "line 3\nline 4"
    page = await fly.get_logs(app, machine_id=machine.id)
    assert [e.message for e in page.entries] == [f"line {i}" for i in range(5)]
    assert {e.instance for e in page.entries} == {machine.id}
    later = await fly.get_logs(app, next_token=page.next_token)
    assert later.entries == []

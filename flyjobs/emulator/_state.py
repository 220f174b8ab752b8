"""The emulator's registry of apps and machines, and the operations the routes call.

Handlers stay thin: they parse the request and call one method here. Every method runs on the
event loop, so no locking is needed; the few that wait (wait, update, force delete, exec) are
coroutines and re-check the machine when they resume.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
from pathlib import Path
from typing import Any

from ._apps import AppRecord
from ._config import EmulatorConfig
from ._errors import ErrorReply, bad_request, conflict, machine_not_found, not_found
from ._ids import machine_id, machine_name, private_ip, ulid
from ._launch import Identity, plan_launch
from ._leases import MAX_TTL_S, acquire, check
from ._lifecycle import Lifecycle
from ._machine import MachineRecord
from ._output import MachineOutput
from ._process import CommandResult, MemoryMonitor, run_command
from ._validate import check_argv, check_region, check_text, validate_config, validate_files

__all__ = ("Emulator",)

_RUNNING = frozenset({"starting", "started", "stopping"})
_APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class Emulator:
    """All state of one emulator instance."""

    def __init__(self, config: EmulatorConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        self.apps: dict[str, AppRecord] = {}
        self.machines: dict[str, MachineRecord] = {}
        self.monitor = MemoryMonitor(config.memory_poll_s)
        self.lifecycle = Lifecycle(config, self.monitor, self._forget)
        for name in config.apps:
            self.create_app(name, None, None)

    # Apps -----------------------------------------------------------------------------------

    def create_app(self, name: object, org_slug: object, network: object) -> AppRecord:
        """Create an app.

        :raises ErrorReply: 400 without a name; 422 on a name that is not lowercase letters,
            digits and dashes (it also names the app's folder), or ``name_taken``.
        """
        if not isinstance(name, str) or not name:
            raise bad_request("app name is required")
        if not _APP_NAME.fullmatch(name):
            raise ErrorReply(
                422, "Name can only contain lowercase letters, numbers and dashes (at most 63)"
            )
        if name in self.apps:
            raise ErrorReply(422, "Name has already been taken", code="name_taken")
        app = AppRecord(
            name=name,
            org_slug=org_slug if isinstance(org_slug, str) and org_slug else self.config.org_slug,
            network=network if isinstance(network, str) and network else "default",
        )
        self.apps[name] = app
        return app

    def app(self, name: str) -> AppRecord:
        """The app called ``name``. :raises ErrorReply: 404."""
        app = self.apps.get(name)
        if app is None:
            raise not_found(f'Could not find App "{name}"')
        return app

    def app_machines(self, app_name: str, *, include_deleted: bool = False) -> list[MachineRecord]:
        """The app's machines in creation order."""
        return [
            m
            for m in self.machines.values()
            if m.app_name == app_name and (include_deleted or m.state != "destroyed")
        ]

    async def delete_app(self, name: str) -> None:
        """Delete an app with its machines, running ones killed first.

        Fly's API takes no condition here (its spec lists no parameter; fly-go's ``DeleteApp``
        sends none, and ``fly apps destroy`` deletes apps that still run machines).

        :raises ErrorReply: 404.
        """
        self.app(name)
        machines = self.app_machines(name, include_deleted=True)
        for machine in machines:
            if machine.state != "destroyed":
                await self.lifecycle.kill_and_destroy(machine)
        del self.apps[name]
        for machine in machines:
            self._forget(machine)
        shutil.rmtree(self.data_dir / name, ignore_errors=True)

    # Machines -------------------------------------------------------------------------------

    def create_machine(self, app_name: str, body: dict[str, Any]) -> bytes:
        """Create (and unless ``skip_launch``, launch) a machine; return the response JSON.

        The response is serialized before the launch, so it shows ``state: created``.

        :raises ErrorReply: 404 unknown app; 400 invalid config; 409 name already used.
        """
        app = self.app(app_name)
        config = validate_config(body.get("config"))
        secrets = {} if body.get("skip_secrets") else app.secret_values()
        validate_files(config, secrets=secrets)
        name = body.get("name") or machine_name()
        if not isinstance(name, str):
            raise bad_request("invalid name: must be a string")
        check_text(name, "name")
        for other in self.app_machines(app_name):
            if other.name == name:
                raise conflict(f"a machine named {name!r} already exists: {other.id}")
        region = body.get("region") or self.config.default_region
        check_region(region)
        self._check_region_known(region)
        _check_mounts(config)
        lease_ttl = _lease_ttl(body)
        new_id = machine_id()
        machine_dir = self.data_dir / app_name / new_id
        machine_dir.mkdir(parents=True)
        machine = MachineRecord(
            id=new_id,
            name=name,
            app_name=app_name,
            region=region,
            private_ip=private_ip(),
            config=config,
            version=ulid(),
            machine_dir=machine_dir,
            secrets=secrets,
            output=MachineOutput(self.config.log_max_bytes),
            serial=app.machines_made,
        )
        app.machines_made += 1
        # fly-go LaunchMachineInput.SkipServiceRegistration: created cordoned (no traffic).
        machine.cordoned = bool(body.get("skip_service_registration"))
        machine.set_state("created", ("launch", "user"))
        self.machines[new_id] = machine
        serialized = self._with_lease(machine, lease_ttl, nonce=None)
        if not body.get("skip_launch"):
            self.lifecycle.launch(machine, new_run=False)
        self.lifecycle.schedule(machine)
        return serialized

    def _check_region_known(self, region: str) -> None:
        """:raises ErrorReply: 400 for a region that is neither Fly's nor the default."""
        known = {*self.config.regions, self.config.default_region}
        if region not in known:
            choices = ", ".join(sorted(known))
            raise bad_request(
                f"invalid region {region!r}: not a known region; use one of {choices}"
            )

    def machine(self, app_name: str, machine_id_: str) -> MachineRecord:
        """A machine of the app (destroyed ones too, while retained). :raises ErrorReply: 404."""
        self.app(app_name)
        machine = self.machines.get(machine_id_)
        if machine is None or machine.app_name != app_name:
            raise machine_not_found()
        return machine

    def live_machine(self, app_name: str, machine_id_: str, nonce: str | None) -> MachineRecord:
        """A machine that may be changed: not destroyed, and ``nonce`` fits its lease.

        :raises ErrorReply: 404 (missing or destroyed); 409 (lease held).
        """
        machine = self.machine(app_name, machine_id_)
        if machine.state in ("destroying", "destroyed"):
            raise machine_not_found()
        check(machine, nonce)
        return machine

    async def update_machine(
        self, app_name: str, machine_id_: str, body: dict[str, Any], nonce: str | None
    ) -> bytes:
        """Replace the whole config and (unless ``skip_launch``) start the new version, whatever
        state the old one was in; return the response JSON, with the lease's ``nonce`` when
        ``lease_ttl`` asks for one.

        :raises ErrorReply: 400 invalid config or a changed name/region; 409 stale
            ``current_version``, lease held, or the machine is busy changing.
        """
        machine = self.live_machine(app_name, machine_id_, nonce)
        config = validate_config(body.get("config"))
        for field, current in (("name", machine.name), ("region", machine.region)):
            if body.get(field) not in (None, "", current):
                raise bad_request(f"{field} is immutable and cannot be updated")
        current_version = body.get("current_version")
        if current_version not in (None, "", machine.version):
            raise conflict(
                f"machine {machine.id} is at version {machine.version}, not {current_version}"
            )
        if machine.state in ("replacing", "stopping"):
            raise conflict(f"machine {machine.id} is {machine.state}; try again")
        lease_ttl = _lease_ttl(body)
        _check_mounts(config)
        app = self.app(app_name)
        secrets = {} if body.get("skip_secrets") else app.secret_values()
        validate_files(config, secrets=secrets)
        machine.secrets = secrets
        if body.get("skip_service_registration"):
            machine.cordoned = True
        await self.lifecycle.replace(machine, ulid(), config, launch=not body.get("skip_launch"))
        return self._with_lease(machine, lease_ttl, nonce=nonce)

    def _with_lease(self, machine: MachineRecord, ttl_s: int | None, *, nonce: str | None) -> bytes:
        """The machine's JSON; with ``ttl_s``, after taking (or, with the holder's ``nonce``,
        refreshing) a lease on it, whose nonce the answer carries."""
        if ttl_s is None:
            return machine.json()
        lease = acquire(
            machine, ttl_s=ttl_s, description="", nonce=nonce, owner=self.config.lease_owner
        )
        return json.dumps({**machine.to_dict(), "nonce": lease.nonce}).encode()

    def start(self, app_name: str, machine_id_: str, nonce: str | None) -> str:
        """Start a stopped or created machine; return its previous state.

        :raises ErrorReply: 400 for a scheduled machine; 409 while it is changing state.
        """
        machine = self.live_machine(app_name, machine_id_, nonce)
        previous = machine.state
        if machine.config.get("schedule"):
            raise bad_request(
                f"machine {machine.id} has a schedule ({machine.config['schedule']}); "
                "it runs on its schedule and cannot be started"
            )
        if previous in ("created", "stopped", "failed"):
            self.lifecycle.launch(machine, new_run=True)
        elif previous == "suspended":
            self.lifecycle.resume(machine)
        elif previous not in ("starting", "started"):
            raise conflict(f"machine {machine.id} is {previous} and cannot be started now")
        return previous

    async def delete_machine(
        self, app_name: str, machine_id_: str, *, force: bool, nonce: str | None
    ) -> None:
        """Destroy a machine; a running one needs ``force`` (it is killed first).

        :raises ErrorReply: 404; 409 running without ``force``, or lease held.
        """
        machine = self.live_machine(app_name, machine_id_, nonce)
        running = machine.state in _RUNNING or machine.state == "replacing"
        if running and not force:
            raise conflict(
                "failed_precondition: unable to destroy machine, not currently stopped, "
                "suspended or failed (use force=true to kill it)"
            )
        if running or machine.state == "suspended":
            await self.lifecycle.kill_and_destroy(machine)
        else:
            self.lifecycle.destroy(machine, source="user")

    async def exec_command(
        self,
        machine: MachineRecord,
        *,
        command: object,
        cmd: object,
        stdin: object,
        timeout_s: object,
    ) -> dict[str, Any]:
        """Run a command in the machine's environment; its failure is still a 200.

        :raises ErrorReply: 400 bad request; 409 machine not started; 408 timed out.
        """
        if isinstance(command, list) and command and all(isinstance(a, str) for a in command):
            argv = list(command)
        elif isinstance(cmd, str) and cmd.strip():
            check_text(cmd, "cmd")
            try:
                argv = shlex.split(cmd)
            except ValueError as exc:
                raise bad_request(f"invalid cmd: {exc}") from None
        else:
            raise bad_request("command is required: an array of strings")
        check_argv(argv, "command")
        if machine.state != "started":
            raise conflict(f"machine {machine.id} is {machine.state}, not started")
        if timeout_s is not None and (
            not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or timeout_s <= 0
        ):
            raise bad_request("invalid timeout: must be a positive number of seconds")
        if stdin is not None and not isinstance(stdin, str):
            raise bad_request("invalid stdin: must be a string")
        identity = Identity(
            machine.app_name, machine.id, machine.region, machine.version, machine.private_ip
        )
        plan = plan_launch(
            identity,
            {**machine.config, "init": {"exec": argv}, "processes": []},
            machine.secrets,
            {},
            machine.machine_dir,
            pass_env=self.config.pass_env,
        )
        limit_s = float(timeout_s) if timeout_s else self.config.default_exec_timeout_s
        try:
            result: CommandResult = await run_command(
                plan.argv, plan.env, stdin=(stdin or "").encode(), limit_s=limit_s
            )
        except TimeoutError:
            raise ErrorReply(408, "deadline_exceeded: the command did not finish in time") from None
        except OSError as exc:
            return {"exit_code": 127, "stdout": "", "stderr": f"{argv[0]}: {exc.strerror}\n"}
        response: dict[str, Any] = {
            "exit_code": result.exit_code,
            "stdout": result.stdout.decode(errors="replace"),
            "stderr": result.stderr.decode(errors="replace"),
        }
        if result.signal > 0:
            response["exit_signal"] = result.signal
        return response

    # Shutdown -------------------------------------------------------------------------------

    async def run_monitor(self) -> None:
        """Enforce guest memory until cancelled."""
        await self.monitor.run()

    def close(self) -> None:
        """Kill every machine process and answer every pending wait."""
        self.lifecycle.close(list(self.machines.values()))

    def kill_processes(self) -> None:
        """SIGKILL every machine's process group without reaping (safe from any thread)."""
        for machine in list(self.machines.values()):
            if machine.handle is not None:
                machine.handle.signal(signal.SIGKILL)

    def _forget(self, machine: MachineRecord) -> None:
        if self.machines.get(machine.id) is machine:
            del self.machines[machine.id]


def _lease_ttl(body: dict[str, Any]) -> int | None:
    """``lease_ttl`` of a create or update body (fly-go's ``LaunchMachineInput.LeaseTTL``).

    :raises ErrorReply: 400 unless absent or a number of seconds in ``1..MAX_TTL_S``; checked
        before the machine is made, so a bad value creates nothing.
    """
    lease_ttl = body.get("lease_ttl")
    if lease_ttl is None:
        return None
    if not isinstance(lease_ttl, int) or isinstance(lease_ttl, bool):
        raise bad_request("invalid lease_ttl: must be a number of seconds")
    if not 0 < lease_ttl <= MAX_TTL_S:
        raise bad_request(f"invalid lease_ttl: must be between 1 and {MAX_TTL_S} seconds")
    return lease_ttl


def _check_mounts(config: dict[str, Any]) -> None:
    """:raises ErrorReply: 404 for a mount: it names a volume, and the emulator has none."""
    mounts = config.get("mounts") or []
    if mounts:
        volume = mounts[0].get("volume") if isinstance(mounts[0], dict) else None
        raise not_found(
            f"volume {volume!r} not found: the emulator has no volumes; remove config.mounts"
        )

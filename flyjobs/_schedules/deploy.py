"""Deploying scheduled functions: one persistent machine per function, updated in place.

``flyjobs schedule deploy MODULE_OR_FILE`` imports the module, finds its functions decorated
with ``schedule=``, and makes each one's machine match: created if missing, updated (under the
machine's lease, so that two deploys cannot interleave) if its function or options changed,
left alone otherwise. A machine is found by its metadata (``flyjobs_schedule`` =
``module:qualname``); its config carries a digest of what was deployed, so an unchanged
function costs one read. Machines of the same module whose function is gone are reported,
and destroyed with ``prune``.

Metadata anyone may write, so no schedule command takes it alone as flyjobs's mark: a
machine is a scheduled function's only with the full set of its metadata, the name
`machine_name` gives its function, and a seal (`META_SEAL`): a MAC under the app's result
key (``FLYJOBS_RESULT_KEY``) of the app, the machine's name, the function and the digest of
its config. A machine without it (another tool's, a look-alike, one deployed before seals)
is never updated, destroyed or listed; a deploy whose machine name it holds says so.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import anyio

from .._calls.machine_config import Resident, create_args, machine_spec
from .._calls.plan import (
    MAX_INLINE_PAYLOAD_BYTES,
    _import_root,
    _portable,
    _positional_names,
    code_bundle,
)
from .._code.delivery import bundle_guest_path
from .._declare.function import Function
from .._declare.options import CallOptions
from .._declare.schedule import Cron, check_cron, describe, schedule_spec
from .._exceptions import (
    ConfigError,
    ConflictError,
    LeaseHeldError,
    NotFoundError,
    SerializationError,
)
from .._output.call_lines import shown
from .._wire.call_envelope import encode_arguments, encode_call
from .._wire.metadata import META_FUNCTION, META_SCHEDULE, META_SCHEDULE_SPEC
from .._wire.reference import function_reference
from .._wire.seal import result_mac, seal_code
from ..machines import Machine, MachineConfig, MachinesClient

__all__ = (
    "DeployReport",
    "Scheduled",
    "deploy",
    "machine_config",
    "scheduled_functions",
)

logger = logging.getLogger("flyjobs.schedule")

#: Metadata keys of a scheduled function's machine.
# META_SCHEDULE (module:qualname) and META_SPEC (the schedule as `describe` shows it) are the
# protocol's: the emulator's dashboard reads them.
META_MODULE = "flyjobs_module"
META_SPEC = META_SCHEDULE_SPEC
META_DIGEST = "flyjobs_digest"  # of the deployed config, to skip unchanged functions
#: The seal that marks a machine as a scheduled function's deployed by flyjobs (see above).
META_SEAL = "flyjobs_schedule_seal"
#: Every metadata key a scheduled function's machine carries.
_META_KEYS = (META_SCHEDULE, META_MODULE, META_SPEC, META_DIGEST, META_FUNCTION, META_SEAL)
#: What the seal's MAC authenticates (kept apart from results and journal records).
_SEAL_PURPOSE = b"flyjobs-schedule"
#: Seconds a deploy's lease on a machine lasts between refreshes.
_LEASE_TTL_S = 30
#: Longest wait, in seconds, for another deploy's lease on a machine to go.
_LEASE_WAIT_S = 120.0


@dataclass(frozen=True)
class Scheduled:
    """A function decorated with ``schedule=``, as deployed.

    :ivar ref: its ``module:qualname``; :ivar name: its qualname (how ``ls`` names it).
    """

    ref: str
    name: str
    function: Function[..., Any]
    sys_path: list[str]

    @property
    def module(self) -> str:
        return self.ref.partition(":")[0]


@dataclass
class DeployReport:
    """What a deploy did, one list of function names per outcome."""

    created: list[str]
    updated: list[str]
    unchanged: list[str]
    stale: list[str]  # machines whose function left the module (destroyed with prune)
    pruned: list[str]


def scheduled_functions(module: ModuleType) -> list[Scheduled]:
    """The module's own functions decorated with ``schedule=``, in definition order.

    :raises ConfigError: a cron expression or time zone is invalid, or fixed arguments do not
        fit the function's signature.
    :raises SerializationError: the function cannot be referenced, or its fixed arguments
        cannot be encoded.
    """
    found = []
    for value in vars(module).values():
        if not isinstance(value, Function) or value.options.schedule is None:
            continue
        if getattr(value, "__module__", None) != module.__name__:
            continue  # imported from elsewhere: deployed with its own module
        ref, roots = function_reference(value)
        _check_arguments(value, ref)
        sys_path = _portable([*roots, *_import_root(ref)])
        found.append(Scheduled(ref, ref.partition(":")[2], value, sys_path))
    return found


def _check_arguments(fn: Function[..., Any], ref: str) -> None:
    options = fn.options
    if isinstance(options.schedule, Cron):
        check_cron(options.schedule)
    try:
        inspect.signature(fn._fn).bind(*options.schedule_args, **options.schedule_kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"{ref} runs on a schedule with no caller, so its arguments must be fixed: {exc};"
            " give them with schedule_args=/schedule_kwargs= in @flyjobs.remote"
        ) from None
    except ValueError:
        pass  # no signature to check (a builtin): the run reports a mismatch


def machine_config(
    scheduled: Scheduled,
    image: str,
    *,
    app: str,
    key: str,
    defaults: Mapping[str, Any] | None = None,
) -> MachineConfig:
    """The machine config of a scheduled function of ``app``, its digest and its seal under
    the result key ``key`` in ``metadata``.

    :param defaults: the settings' defaults (``[tool.flyjobs]``: region, size, timeout), for
        the options the function leaves unset, as its calls take them.
    """
    options = scheduled.function.options.merged(defaults or {})
    schedule = options.schedule
    assert schedule is not None
    spec = {
        **schedule_spec(schedule),
        "timeout_s": options.effective_timeout_s,
        "retries": options.retries,
        # Only when set: the digests of functions deployed before these options still match.
        **({"alert_url": options.alert_url} if options.alert_url else {}),
    }
    arguments = encode_arguments(
        options.schedule_args,
        options.schedule_kwargs,
        pickle=options.pickle,
        arg_names=_positional_names(scheduled.function._fn),
    )
    if len(arguments) > MAX_INLINE_PAYLOAD_BYTES:
        # The payload lives as long as the machine: no expiring object-store copy of it.
        raise SerializationError(
            f"the fixed arguments of {scheduled.ref} encode to {len(arguments)} bytes, over the"
            f" {MAX_INLINE_PAYLOAD_BYTES} that travel inside a machine config; pass large data"
            " by reference (a URL or object-store key)"
        )
    call_id = machine_name(scheduled.ref)
    # The bundle lives in the machine's config, as long as the machine: a presigned URL would
    # expire. Its bytes are in the config, so a changed bundle is a changed digest.
    bundle = code_bundle(scheduled.ref, options, purpose=f"the scheduled function {scheduled.ref}")
    code, files = None, []
    if bundle is not None:
        path = bundle_guest_path(bundle)
        code = {
            "sha256": bundle.sha256,
            "seal": seal_code(key, bundle.sha256, call_id),
            "path": path,
            "url": None,
            "requires": [list(each) for each in bundle.requires],
        }
        files = [(path, bundle.data)]
    payload = encode_call(
        scheduled.ref,
        code=code,
        call_id=call_id,
        deadline=0.0,
        result_url="",
        sys_path=scheduled.sys_path,
        pickle=options.pickle,
        arguments=arguments,
        schedule=spec,
    )
    catches_up = isinstance(schedule, Cron) and schedule.catch_up != "none"
    lifetime = Resident(
        schedule, options.retries, keeps_state=bool(options.alert_url) or catches_up
    )
    config = machine_spec(
        options, image=image, payload=payload, metadata=None, lifetime=lifetime, files=files
    )
    # With code="image" the code runs from the image, but a changed function is a change to
    # deploy (the image may keep its tag): its source counts in the digest too.
    source = _source(scheduled.function)
    # The region is no part of the config (it is the create request's): a change of it is a
    # change to deploy. Unset, it stays out, so that digests of earlier deploys still match.
    region = [options.region] if options.region else []
    digest = hashlib.sha256(
        json.dumps([config, source, *region], sort_keys=True).encode()
    ).hexdigest()[:32]
    config["metadata"] = {
        META_SCHEDULE: scheduled.ref,
        META_MODULE: scheduled.module,
        META_SPEC: describe(spec),
        META_DIGEST: digest,
        META_FUNCTION: scheduled.ref,
        META_SEAL: seal(key, app, scheduled.ref, digest),
    }
    return MachineConfig.model_validate(config)


def _source(fn: Function[..., Any]) -> str:
    try:
        return inspect.getsource(fn._fn)
    except (OSError, TypeError):
        return ""  # no source to see (a builtin, a frozen module): the config alone counts


def machine_name(ref: str) -> str:
    """The machine name of a scheduled function: ``fjs-<module>-<qualname>``, DNS-safe."""
    slug = re.sub(r"[^a-z0-9]+", "-", ref.lower()).strip("-")
    return f"fjs-{slug}"[:63].rstrip("-")


def seal(key: str, app: str, ref: str, digest: str) -> str:
    """The seal of the machine of scheduled function ``ref`` in ``app`` whose config has
    ``digest``, under the result key ``key``."""
    identity = "\0".join([app, machine_name(ref), ref, digest]).encode()
    return result_mac(key, identity, purpose=_SEAL_PURPOSE)


def deployed_by_flyjobs(machine: Machine, app: str, key: str) -> bool:
    """Whether ``machine`` is a scheduled function's that flyjobs deployed in ``app``: the full
    set of its metadata, its function's machine name, and a seal made with ``key``."""
    meta = (machine.config.metadata if machine.config else None) or {}
    if not all(meta.get(name) for name in _META_KEYS):
        return False
    ref = meta[META_SCHEDULE]
    if (
        meta[META_FUNCTION] != ref
        or meta[META_MODULE] != ref.partition(":")[0]
        or machine.name != machine_name(ref)
    ):
        return False
    return hmac.compare_digest(meta[META_SEAL], seal(key, app, ref, meta[META_DIGEST]))


async def scheduled_machines(client: MachinesClient, app: str, key: str) -> list[Machine]:
    """The app's live machines of scheduled functions that flyjobs deployed (sealed with the
    result key ``key``); any other machine, whatever its metadata, is left out."""
    machines = await client.list_machines(app)
    return [m for m in machines if m.state != "destroyed" and deployed_by_flyjobs(m, app, key)]


def _ref_of(machine: Machine) -> str:
    return (machine.config.metadata or {}).get(META_SCHEDULE, "") if machine.config else ""


async def deploy(
    client: MachinesClient,
    app: str,
    image: str,
    module: ModuleType,
    *,
    key: str,
    prune: bool = False,
    defaults: Mapping[str, Any] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> DeployReport:
    """Make the app's scheduled machines match the module's scheduled functions.

    :param key: the app's result key: machines are sealed with it, and only machines sealed
        with it are updated or pruned.
    :param defaults: the settings' defaults (``[tool.flyjobs]``) for options a function leaves
        unset, as its calls take them.
    :param say: called with a line of progress (waiting for a lease, ...).
    :raises ConfigError, SerializationError: a function cannot be deployed (checked for every
        function before any machine is touched).
    :raises ConfigError: another machine (not sealed by flyjobs) holds a function's name.
    """
    functions = scheduled_functions(module)
    configs = {
        s.ref: machine_config(
            s, s.function.options.image or image, app=app, key=key, defaults=defaults
        )
        for s in functions
    }
    report = DeployReport([], [], [], [], [])
    existing = await scheduled_machines(client, app, key)
    for scheduled in functions:
        mine = sorted(
            (m for m in existing if _ref_of(m) == scheduled.ref),
            key=lambda m: m.created_at.timestamp() if m.created_at else 0,
        )
        options = scheduled.function.options.merged(defaults or {})
        config = configs[scheduled.ref]
        outcome = await _deploy_one(client, app, key, scheduled, options, config, mine, say)
        getattr(report, outcome).append(scheduled.name)
    wanted = set(configs)
    for machine in existing:
        ref = _ref_of(machine)
        meta = machine.config.metadata or {} if machine.config else {}
        if meta.get(META_MODULE) != module.__name__ or ref in wanted:
            continue
        name = ref.partition(":")[2]
        report.stale.append(name)
        if prune:
            await _destroy(client, app, key, machine.id, say)
            report.pruned.append(name)
    return report


async def _deploy_one(
    client: MachinesClient,
    app: str,
    key: str,
    scheduled: Scheduled,
    options: CallOptions,
    config: MachineConfig,
    mine: list[Machine],
    say: Callable[[str], None],
) -> str:
    native = config.schedule is not None
    name = machine_name(scheduled.ref)
    if not mine:
        try:
            await client.create_machine(app, config, name=name, **create_args(options))
            return "created"
        except ConflictError:
            # Another deploy created it in the meantime: update that one under its lease.
            mine = [
                m for m in await scheduled_machines(client, app, key) if _ref_of(m) == scheduled.ref
            ]
            if not mine:
                raise ConfigError(
                    f"a machine named {shown(name, output=False)} exists in {app!r} but flyjobs"
                    f" did not deploy it (or deployed it with another FLYJOBS_RESULT_KEY, or"
                    f" before schedule machines were sealed), so it is left alone: destroy it"
                    f" (`fly machine destroy --force ID -a {app}`) if it is yours, then deploy"
                    " again"
                ) from None
    keep, *extra = mine
    for machine in extra:  # twins left by an earlier race: the oldest stays
        await _destroy(client, app, key, machine.id, say)
    async with _leased(client, app, keep.id, say):
        current = await client.get_machine(app, keep.id)
        if not deployed_by_flyjobs(current, app, key):
            # Changed since it was listed: it is no longer one flyjobs may touch.
            raise ConfigError(
                f"machine {keep.id} of {scheduled.ref} changed during the deploy and no longer"
                " carries flyjobs's seal: left alone"
            )
        digest = (current.config.metadata or {}).get(META_DIGEST) if current.config else None
        assert config.metadata is not None
        if digest == config.metadata[META_DIGEST]:
            return "unchanged"
        if options.region is None or current.region == options.region:
            # A Fly-scheduled machine is left for its schedule to start; a cron resident
            # restarts on the new version at once.
            await client.update_machine(app, keep.id, config, skip_launch=native)
            return "updated"
        # Fly cannot move a machine: the one in the old region goes, a new one is created.
        await client.delete_machine(app, keep.id, force=True)
    await client.create_machine(app, config, name=name, **create_args(options))
    return "updated"


class _leased:
    """Hold the machine's lease for a block, waiting (bounded) while another deploy holds it."""

    def __init__(
        self, client: MachinesClient, app: str, machine_id: str, say: Callable[[str], None]
    ) -> None:
        self._client = client
        self._app = app
        self._machine_id = machine_id
        self._say = say
        self._scope: Any = None

    async def __aenter__(self) -> None:
        delay_s, waited_s = 0.1, 0.0
        while True:
            scope = self._client.lease(
                self._app, self._machine_id, ttl_s=_LEASE_TTL_S, description="flyjobs deploy"
            )
            try:
                await scope.__aenter__()
            except LeaseHeldError:
                if waited_s >= _LEASE_WAIT_S:
                    raise
                if waited_s == 0:
                    self._say(f"machine {self._machine_id} is leased by another deploy; waiting")
                await anyio.sleep(delay_s)
                waited_s += delay_s
                delay_s = min(delay_s * 2, 2.0)
                continue
            self._scope = scope
            return

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._scope.__aexit__(*exc_info)


async def _destroy(
    client: MachinesClient, app: str, key: str, machine_id: str, say: Callable[[str], None]
) -> None:
    """Destroy a scheduled function's machine, if it still carries flyjobs's seal under its
    lease (it may have been changed since it was listed).

    :raises ConfigError: it no longer carries the seal (it is left alone).
    """
    try:
        async with _leased(client, app, machine_id, say):
            if not deployed_by_flyjobs(await client.get_machine(app, machine_id), app, key):
                raise ConfigError(
                    f"machine {machine_id} no longer carries flyjobs's seal: left alone"
                )
            await client.delete_machine(app, machine_id, force=True)
    except NotFoundError:
        pass  # already gone


def iter_refs(machines: list[Machine]) -> Iterator[tuple[str, Machine]]:
    """(``module:qualname``, machine) of scheduled machines."""
    for machine in machines:
        yield _ref_of(machine), machine

"""Client behaviour on answers the emulator cannot be made to give (``httpx.MockTransport``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import partial
from typing import Any

import anyio
import httpx
import pytest
from _mc_helpers import mock_client

from flyjobs._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    LeaseHeldError,
    NotFoundError,
    PreconditionFailedError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnprocessableError,
    WaitTimeoutError,
)
from flyjobs.machines import MachineConfig, MachinesClient, RateLimits, RetryPolicy

pytestmark = pytest.mark.anyio

Handler = Callable[[httpx.Request], httpx.Response]
CONFIG = MachineConfig(image="img")


class Recorder:
    """Answers requests from a list of canned outcomes per (method, path suffix)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def seen(self, method: str, suffix: str = "") -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path.endswith(suffix)]


def _machine(name: str, machine_id: str = "m1", state: str = "started") -> dict[str, Any]:
    return {"id": machine_id, "name": name, "state": state}


# -- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ConflictError),
        (412, PreconditionFailedError),
        (422, UnprocessableError),
        (500, ServerError),
    ],
)
async def test_error_statuses_map_to_the_exception_tree(status: int, cls: type[APIError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": "it went wrong", "status": "unknown"}
        return httpx.Response(status, json=body, headers={"fly-request-id": "req-1"})

    async with mock_client(handler) as fly:
        with pytest.raises(cls) as info:
            await fly.get_machine("app", "m1")
    error = info.value
    assert type(error) is cls
    assert (error.status_code, error.error, error.code) == (status, "it went wrong", "unknown")
    assert (error.method, error.path, error.request_id) == (
        "GET",
        "/v1/apps/app/machines/m1",
        "req-1",
    )


async def test_lease_conflict_envelope_is_a_lease_held_error() -> None:
    body = {"status": "error", "message": "lease currently held by hello@fly.io", "code": "invalid"}

    # Off the spec on purpose: the envelope without "error", only "message".
    async with mock_client(lambda request: httpx.Response(409, json=body), off_spec=True) as fly:
        with pytest.raises(LeaseHeldError) as info:
            await fly.stop_machine("app", "m1")
    assert info.value.error == "lease currently held by hello@fly.io"
    assert info.value.code == "invalid"


async def test_non_json_error_body_is_kept_as_text() -> None:
    # Off the spec on purpose: a proxy's plain-text error.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text="bad thing\n")

    async with mock_client(handler, off_spec=True) as fly:
        with pytest.raises(BadRequestError, match="bad thing"):
            await fly.get_app("app")


async def test_malformed_answer_is_an_api_error_without_pydantic_in_the_chain() -> None:
    # Off the spec on purpose: what the client does with a body it cannot read.
    async with mock_client(
        lambda request: httpx.Response(200, json={"id": 5}), off_spec=True
    ) as fly:
        with pytest.raises(APIError, match="unexpected answer") as info:
            await fly.get_machine("app", "m1")
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_server_echoing_the_token_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": f"bad token {request.headers['authorization']}"})

    async with mock_client(handler, token="echoed-token-42") as fly:
        with pytest.raises(AuthenticationError) as info:
            await fly.get_app("app")
    assert "echoed-token-42" not in str(info.value)
    assert "[redacted]" in str(info.value)


# -- retries ----------------------------------------------------------------------------------


async def test_429_waits_for_retry_after_given_as_a_date() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(anyio.current_time())
        if len(calls) == 1:
            when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
            return httpx.Response(429, json={"error": "slow down"}, headers={"retry-after": when})
        return httpx.Response(200, json={"name": "app"})

    async with mock_client(handler, retry=RetryPolicy(base_s=0.001)) as fly:
        await fly.get_app("app")
    # The date has whole seconds: 2 s ahead, less under a second, is over a second of waiting
    # (the policy's own backoff would be a millisecond).
    assert len(calls) == 2 and calls[1] - calls[0] > 0.9


async def test_retry_after_date_is_read_as_seconds_from_now() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        when = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
        return httpx.Response(429, json={"error": "later"}, headers={"retry-after": when})

    async with mock_client(handler) as fly:
        with pytest.raises(RateLimitedError) as info:
            await fly.get_app("app")
    assert info.value.retry_after_s is not None and 3590 < info.value.retry_after_s <= 3600


async def test_429_with_too_long_retry_after_is_raised_at_once() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"error": "later"}, headers={"retry-after": "3600"})

    async with mock_client(handler) as fly:
        with pytest.raises(RateLimitedError) as info:
            await fly.get_app("app")
    assert info.value.retry_after_s == 3600


async def test_retry_budget_is_bounded() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, json={"error": "unavailable"})

    async with mock_client(handler, retry=RetryPolicy(max_attempts=3, base_s=0.001)) as fly:
        with pytest.raises(ServerError):
            await fly.get_machine("app", "m1")
    assert len(seen) == 3


async def test_500_is_retried_only_where_repeating_is_safe() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) == 1:
            return httpx.Response(500, json={"error": "internal"})
        if request.method == "POST":
            return httpx.Response(500, json={"error": "internal"})
        return httpx.Response(200, json={"id": "m1"})

    async with mock_client(handler) as fly:
        assert (await fly.get_machine("app", "m1")).id == "m1"
        with pytest.raises(ServerError):
            await fly.restart_machine("app", "m1")
    assert seen == ["GET", "GET", "POST"]


async def test_unsafe_call_is_not_repeated_after_an_unknown_outcome() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(502, json={"error": "bad gateway"})

    async with mock_client(handler) as fly:
        with pytest.raises(ServerError):
            await fly.exec("app", "m1", ["true"])
        with pytest.raises(ServerError):
            await fly.signal_machine("app", "m1", "SIGUSR1")
    assert len(seen) == 2


async def test_unsafe_call_is_repeated_when_it_was_never_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, json={"exit_code": 0, "stdout": "ok"})

    async with mock_client(handler) as fly:
        result = await fly.exec("app", "m1", ["echo", "ok"])
    assert (result.stdout, len(seen)) == ("ok", 2)


async def test_delete_whose_answer_was_lost_counts_as_done() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ReadError("connection reset")
        return httpx.Response(404, json={"error": "machine not found"})

    async with mock_client(handler) as fly:
        await fly.delete_machine("app", "m1", force=True)
    assert len(seen) == 2


# -- creates are never blindly repeated -------------------------------------------------------


@pytest.mark.parametrize(
    "lost",
    [
        lambda request: httpx.Response(408, json={"error": "request timed out"}),
        lambda request: httpx.Response(500, json={"error": "internal"}),
        lambda request: (_ for _ in ()).throw(httpx.ReadError("connection reset")),
    ],
    ids=["408", "500", "read-error"],
)
async def test_create_with_unknown_outcome_returns_the_machine_it_made(lost: Handler) -> None:
    machines: list[dict[str, Any]] = []
    creates: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            creates.append(request)
            machines.append(_machine(json.loads(request.content)["name"]))
            return lost(request)
        assert request.url.params["include_deleted"] == "true"
        return httpx.Response(200, json=machines)

    async with mock_client(handler) as fly:
        machine = await fly.create_machine("app", CONFIG, name="job-1")
    assert (machine.id, machine.name, len(creates)) == ("m1", "job-1", 1)


async def test_create_is_repeated_once_the_lookup_finds_nothing() -> None:
    creates: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            creates.append(json.loads(request.content)["name"])
            if len(creates) == 1:
                return httpx.Response(503, json={"error": "unavailable"})
            return httpx.Response(200, json=_machine(creates[-1]))
        return httpx.Response(200, json=[])

    async with mock_client(handler) as fly:
        machine = await fly.create_machine("app", CONFIG)
    assert len(creates) == 2 and creates[0] == creates[1] == machine.name
    assert machine.name is not None and machine.name.startswith("flyjobs-")


async def test_create_is_not_repeated_when_the_lookup_fails() -> None:
    creates: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            creates.append(request)
            raise httpx.ReadError("connection reset")
        raise httpx.ConnectError("network down")

    async with mock_client(handler) as fly:
        with pytest.raises(TransportError, match="ReadError"):
            await fly.create_machine("app", CONFIG)
    assert len(creates) == 1


async def test_cancelled_create_destroys_the_machine_it_made() -> None:
    # Cancelled while the server is still making the machine: the create is seen through (were
    # it abandoned, a look-up could run before the machine exists), then the machine destroyed.
    machines: list[dict[str, Any]] = []
    deleted: list[str] = []
    made = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            made.set()
            await anyio.sleep(0.3)  # the caller is cancelled meanwhile
            machines.append(_machine(json.loads(request.content)["name"], "m7"))
            return httpx.Response(200, json=machines[-1])
        if request.method == "DELETE":
            deleted.append(request.url.path.rsplit("/", 1)[1])
            assert request.url.params["force"] == "true"
            return httpx.Response(200, json={"ok": True})
        return httpx.Response(200, json=machines)

    async with mock_client(handler) as fly:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(fly.create_machine, "app", CONFIG))
            await made.wait()
            tasks.cancel_scope.cancel()
    assert deleted == ["m7"]


async def test_create_app_with_lost_answer_reads_the_app_back() -> None:
    creates: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            creates.append(json.loads(request.content))
            raise httpx.RemoteProtocolError("server disconnected")
        return httpx.Response(200, json={"id": "app-id", "name": "my-app"})

    async with mock_client(handler) as fly:
        app = await fly.create_app("my-app")
    assert (app.id, app.name, len(creates)) == ("app-id", "my-app", 1)
    assert creates[0]["idempotency_key"]


async def test_lease_acquisition_with_lost_answer_is_recognised_by_description() -> None:
    leases: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            leases.append({"nonce": "n1", "description": body["description"], "expires_at": 1})
            return httpx.Response(408, json={"error": "timeout"})
        return httpx.Response(200, json={"status": "success", "data": leases[-1]})

    async with mock_client(handler) as fly:
        lease = await fly.acquire_lease("app", "m1", description="deploy")
    assert lease.nonce == "n1" and len(leases) == 1
    assert lease.description is not None and lease.description.startswith("deploy [")


# -- wait -------------------------------------------------------------------------------------


async def test_wait_read_timeout_outlasts_the_server_wait() -> None:
    timeouts: list[dict[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"])
        assert request.url.params["timeout"] == "60"
        assert request.url.params.get_list("state") == ["stopped", "failed"]
        return httpx.Response(200, json={"ok": True, "state": "stopped"})

    async with mock_client(handler) as fly:
        result = await fly.wait("app", "m1", ("stopped", "failed"), timeout_s=600)
    assert result.state == "stopped"
    assert timeouts[0]["read"] > 60


async def test_wait_does_not_spin_on_early_408s() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(408, json={"error": "deadline exceeded"})

    async with mock_client(handler) as fly:
        with pytest.raises(WaitTimeoutError, match="did not reach started"):
            await fly.wait("app", "m1", timeout_s=1.5)
    assert 1 <= len(seen) <= 3


async def test_wait_for_destroyed_of_a_gone_machine_succeeds() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "machine not found"})

    async with mock_client(handler) as fly:
        assert (await fly.wait("app", "m1", "destroyed")).state == "destroyed"
        with pytest.raises(NotFoundError):
            await fly.wait("app", "m1", "stopped")


# -- pagination, settings ---------------------------------------------------------------------


async def test_list_machines_follows_the_cursor_header() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["metadata.batch"] == "b1"
        if request.url.params.get("cursor") == "c2":
            return httpx.Response(200, json=[_machine("two", "m2")])
        return httpx.Response(200, json=[_machine("one")], headers={"fly-next-cursor": "c2"})

    async with mock_client(handler) as fly:
        machines = await fly.list_machines("app", metadata={"batch": "b1"})
    assert [m.id for m in machines] == ["m1", "m2"]


async def test_list_apps_follows_next_cursor() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("cursor") == "c2":
            return httpx.Response(200, json={"apps": [{"name": "b"}], "total_apps": 2})
        return httpx.Response(200, json={"apps": [{"name": "a"}], "next_cursor": "c2"})

    async with mock_client(handler) as fly:
        assert [a.name for a in await fly.list_apps()] == ["a", "b"]


@pytest.mark.parametrize(
    ("token", "header"),
    [
        ("plain-token", "Bearer plain-token"),
        ("Bearer plain-token\n", "Bearer plain-token"),
        ("FlyV1 fm2_abc,fm2_def", "FlyV1 fm2_abc,fm2_def"),
        ("fm1r_xyz", "FlyV1 fm1r_xyz"),
    ],
)
async def test_authorization_scheme(token: str, header: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"name": "app"})

    async with mock_client(handler, token=token) as fly:
        await fly.get_app("app")
    assert seen == [header]


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", "env-token")
    monkeypatch.setenv("FLY_API_HOSTNAME", "http://_api.internal:4280/v1/")
    fly = MachinesClient()
    assert fly.base_url == "http://_api.internal:4280"
    assert fly.logs_url == "https://api.fly.io"
    assert fly.rate_limits == RateLimits()
    monkeypatch.delenv("FLY_API_HOSTNAME")
    assert MachinesClient().base_url == "https://api.machines.dev"
    local = MachinesClient(base_url="http://127.0.0.1:4280")
    assert local.rate_limits is None and local.logs_url == "http://127.0.0.1:4280"
    assert MachinesClient(base_url="http://localhost:4280", rate_limits="fly").rate_limits


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"token": ""}, "FLY_API_TOKEN"),
        ({"token": "abc def"}, "whitespace"),
        ({"token": "t", "base_url": "api.machines.dev"}, "http(s) URL"),
        ({"token": "t", "rate_limits": "sometimes"}, "rate_limits"),
    ],
)
def test_bad_settings_raise_config_error(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], words: str
) -> None:
    monkeypatch.delenv("FLY_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        MachinesClient(**kwargs)


async def test_injected_http_client_is_not_closed() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"name": "a"}))
    async with httpx.AsyncClient(transport=transport) as http:
        async with MachinesClient("t", base_url="http://127.0.0.1:9", http=http) as fly:
            await fly.get_app("a")
        assert not http.is_closed
        with pytest.raises(TransportError, match="closed"):
            await fly.get_app("a")


async def test_local_argument_errors_send_nothing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    async with mock_client(handler) as fly:
        with pytest.raises(ValueError, match="signal"):
            await fly.signal_machine("app", "m1", "SIGNOPE")
        with pytest.raises(ValueError, match="timeout"):
            await fly.stop_machine("app", "m1", timeout_s=600)
        with pytest.raises(ValueError, match="command"):
            await fly.exec("app", "m1", "ls -l")
        with pytest.raises(ValueError, match="state"):
            await fly.wait("app", "m1", ())

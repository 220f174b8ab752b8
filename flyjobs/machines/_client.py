"""`MachinesClient`: one async method per endpoint of the Fly Machines API."""

from __future__ import annotations

from ._actions import ActionsAPI
from ._apps import AppsAPI
from ._lease import LeasesAPI
from ._logs import LogsAPI
from ._machines import MachinesAPI
from ._metadata import MetadataAPI

__all__ = ("MachinesClient",)


class MachinesClient(AppsAPI, MachinesAPI, ActionsAPI, LeasesAPI, MetadataAPI, LogsAPI):
    """Async client of the Fly Machines REST API.

    Use it as an async context manager (``async with MachinesClient() as fly: ...``) or call
    `aclose`. It holds one httpx connection pool. Its methods raise only flyjobs exceptions:
    `APIError` subclasses for error answers, `TransportError` when the API cannot be reached,
    `WaitTimeoutError` from `wait`; invalid arguments raise `ValueError` (pydantic's
    ``ValidationError`` for models), naming the field, before anything is sent.

    :param token: API token; default ``$FLY_API_TOKEN``. A ``Bearer``/``FlyV1`` prefix is
        accepted, and macaroon tokens are sent under the ``FlyV1`` scheme. The token never
        appears in a repr, log line or exception message.
    :param base_url: ``https://api.machines.dev``, ``http://_api.internal:4280`` or a local
        emulator's URL (with or without ``/v1``); default ``$FLY_API_HOSTNAME``, else the first.
    :param retry: retry budget and backoff; see `RetryPolicy`.
    :param rate_limits: client-side pacing: ``"fly"`` (Fly's published limits, see
        `RateLimits`), ``"off"``, a custom `RateLimits`, or ``"auto"`` (the default): Fly's
        limits, except that on a loopback address a bucket is paced only once the API has
        answered it 429. With any pacing, a 429 empties its bucket for the backoff (at least
        ``Retry-After``) and the retry queues behind the requests already waiting.
    :param timeout_s: connect/read/write timeout of one request, in seconds (waits and execs
        get read timeouts longer than their server-side timeouts, and a create waits up to
        ``CREATE_READ_TIMEOUT_S`` for its answer: Fly can take longer to make a machine).
    :param http: an `httpx.AsyncClient` to send with (the test seam). It is not closed by
        `aclose`; its base URL and auth are not used.
    :param transport: an httpx transport for the client's own pool (exclusive with ``http``).
    :param logs_url: where app logs are read (`get_logs`): Fly serves them from
        ``https://api.fly.io``, the default with Fly's Machines API hosts; for any other base
        URL (the emulator) the default is the base URL itself.
    :raises ConfigError: no token, a token with whitespace, or a base URL that is not http(s).

    **Repeating requests.** Retries cover 429 (after ``Retry-After``), 408, 500/502/503/504 and
    network failures, per `RetryPolicy`. After an outcome that leaves unknown whether Fly acted
    (408, 5xx, a connection lost after sending), only requests that end in the same state when
    done twice are repeated: reads, ``stop``, ``start``, deletes, metadata and secret writes,
    lease refresh and release. ``update``, ``restart``, ``signal`` and ``exec`` are not (doing
    them twice is visible), so the error is raised. Creates and lease acquisition are never
    repeated blindly: the client first looks for what the lost attempt may have made (the
    machine by its name, the app by its name, the lease by its tagged description) and returns
    it if found.

    **Leases.** ``async with fly.lease(app, machine_id) as held:`` holds a lease for the block;
    calls for that machine inside it send ``fly-machine-lease-nonce`` by themselves (through a
    context variable). Methods also take an explicit ``nonce=``, which wins.
    """

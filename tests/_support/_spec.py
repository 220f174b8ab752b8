"""Checks API responses against Fly's official Machines API spec (OpenAPI 3.1).

`assert_matches_spec` validates one response body against the schema the spec gives for that
operation and status; error statuses the spec does not list for an operation (401, 404, 408,
409, 429, 5xx, ...) must still be Fly's ``ErrorResponse``. `check_response` does the same for
an httpx response and is meant as a response event hook, so every response a test client
receives is checked. Where the spec and Fly's guide (or fly-go) disagree, the emulator follows
the guide and the difference is listed once, in `SPEC_EXCEPTIONS`.

The spec is the copy in ``tests/spec/`` (see its README), or ``$FLYJOBS_SPEC``.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = (
    "SPEC_EXCEPTIONS",
    "SpecCheckingTransport",
    "SpecException",
    "acheck_response",
    "assert_matches_spec",
    "check_response",
    "spec_path",
)

_SPEC_URI = "urn:fly:machines-openapi"


@dataclass(frozen=True)
class SpecException:
    """A documented difference between the spec and what Fly (guide, fly-go) really does."""

    method: str
    path: str
    status: int | None
    what: str


#: The one list of places where the emulator follows the guide or fly-go, not the spec.
SPEC_EXCEPTIONS = (
    SpecException(
        "POST",
        "/v1/apps/{app_name}/machines/{machine_id}/lease",
        201,
        "lease envelope: the guide and fly-go answer {status, data: Lease}; the spec a flat Lease",
    ),
    SpecException(
        "GET",
        "/v1/apps/{app_name}/machines/{machine_id}/lease",
        200,
        "lease envelope, as for acquire",
    ),
    SpecException(
        "*",
        "/v1/apps/{app_name}/machines/{machine_id}*",
        409,
        "lease conflict body is the guide's {status: error, message, code: invalid} plus error; "
        "its status 'error' is outside the spec's main.statusCode enum",
    ),
    SpecException(
        "POST",
        "/v1/apps",
        None,
        "request: the guide sends app_name, the spec and fly-go name; both are accepted",
    ),
    SpecException(
        "DELETE",
        "/v1/apps/{app_name}/machines/{machine_id}",
        None,
        "query: the spec and guide say force=true, fly-go sends kill=true; both kill",
    ),
    SpecException(
        "GET",
        "/v1/apps/{app_name}/machines/{machine_id}/wait",
        408,
        "the guide documents 408 on timeout; the spec lists only 200 and 400",
    ),
    SpecException(
        "*",
        "*",
        None,
        "the guide shows null for unset fields (init.exec, metadata); the spec types forbid null, "
        "so unset fields are omitted",
    ),
    SpecException(
        "GET",
        "/api/v1/apps/{app_name}/logs",
        None,
        "Fly's logs API (api.fly.io), not part of the Machines API spec; not validated here",
    ),
)


def spec_path() -> Path:
    """Where the spec is: ``$FLYJOBS_SPEC``, else the copy in ``tests/spec/``."""
    override = os.environ.get("FLYJOBS_SPEC")
    if override:
        return Path(override)
    return Path(__file__).parent.parent / "spec" / "machines-openapi.yaml"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML 1.2 booleans only: the spec's restart policy enum holds the string ``no``, which
    YAML 1.1 would read as False."""


_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@functools.cache
def _spec() -> dict[str, Any]:
    with spec_path().open(encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)  # type: ignore[no-any-return]


@functools.cache
def _registry() -> Any:
    resource = Resource.from_contents(_spec(), default_specification=DRAFT202012)
    return Registry().with_resource(_SPEC_URI, resource)


@functools.cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    compiled = []
    for template in _spec()["paths"]:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        compiled.append((re.compile(pattern + "$"), template))
    # Templates with more literal text first, so /machines/{id}/lease beats /machines/{id}.
    compiled.sort(key=lambda item: -len(re.sub(r"\{[^}]+\}", "", item[1])))
    return compiled


def template_of(path: str) -> str | None:
    """The spec's path template matching a concrete path, if any."""
    for pattern, template in _templates():
        if pattern.match(path):
            return template
    return None


def _validate(schema: dict[str, Any], body: Any, where: str) -> None:
    validator = OAS31Validator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        details = "\n".join(
            f"  at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in errors[:5]
        )
        raise AssertionError(f"{where}: response does not match the spec:\n{details}")


def _schema_ref(name: str) -> dict[str, Any]:
    return {"$ref": f"{_SPEC_URI}#/components/schemas/{name}"}


def _with_absolute_refs(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: (
                _SPEC_URI + value
                if key == "$ref" and value.startswith("#")
                else _with_absolute_refs(value)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_with_absolute_refs(item) for item in schema]
    return schema


def assert_matches_spec(method: str, path_template: str, status: int, body: Any) -> None:
    """Assert that ``body`` is what the spec allows for ``method path_template`` → ``status``.

    Error statuses the operation does not list must be an ``ErrorResponse``; success
    statuses it does not list fail. `SPEC_EXCEPTIONS` are applied.
    """
    where = f"{method} {path_template} -> {status}"
    operation = _spec()["paths"][path_template][method.lower()]
    if path_template.endswith("/lease") and status in (200, 201) and method in ("GET", "POST"):
        assert body.get("status") == "success", f"{where}: lease envelope expected, got {body}"
        _validate(_schema_ref("Lease"), body["data"], where)
        return
    if status == 409 and isinstance(body, dict) and body.get("status") == "error":
        assert {"error", "message", "code"} <= body.keys(), f"{where}: lease conflict body {body}"
        return
    response = operation.get("responses", {}).get(str(status))
    if response is None:
        assert status >= 400, f"{where}: the spec does not list this success status"
        _validate(_schema_ref("ErrorResponse"), body, where)
        return
    content = response.get("content") or {}
    schema = (content.get("application/json") or {}).get("schema")
    if schema is not None:
        _validate(_with_absolute_refs(schema), body, where)
    elif status >= 400 and body is not None:
        _validate(_schema_ref("ErrorResponse"), body, where)


def _check(response: httpx.Response) -> None:
    request = response.request
    template = template_of(request.url.path)
    if template is None or request.method.lower() not in _spec()["paths"][template]:
        return
    body = json.loads(response.content) if response.content.strip() else None
    assert_matches_spec(request.method, template, response.status_code, body)


def check_response(response: httpx.Response) -> None:
    """httpx response hook (sync client): validate the response against the spec."""
    response.read()
    _check(response)


async def acheck_response(response: httpx.Response) -> None:
    """httpx response hook (async client): validate the response against the spec."""
    await response.aread()
    _check(response)


class SpecCheckingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that validates every response against the spec, for clients (such as
    `MachinesClient`) that build their own ``httpx.AsyncClient``."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        await response.aread()
        response.request = request
        _check(response)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

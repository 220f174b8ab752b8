"""Fixtures of the object-store tests: moto's S3 server on 127.0.0.1 (a real S3 endpoint, no
mocks), and flyjobs pointed at a standalone emulator in Fly mode as a caller outside Fly would
be: results through the store, no inbox machines could reach."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator

import httpx
import pytest
from _store_helpers import APP

from flyjobs._calls.runtime import shutdown_runtime
from flyjobs.emulator import RunningEmulator

#: The app secret results are sealed with; the caller holds the same value.
RESULT_KEY = "store-result-key-0123456789abcdef"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in a thread of this process, on a free port of 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, with the credentials `fly storage create` would export."""
    name = "fj-" + secrets.token_hex(6)
    assert httpx.put(f"{s3_endpoint}/{name}").is_success
    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(var, value)
    return name


@pytest.fixture
def fly_store(
    make_emulator: Callable[..., RunningEmulator],
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """flyjobs against a standalone emulator in Fly mode, results through the store
    ``s3://<bucket>/flyjobs``; yields the bucket name."""
    emulator = make_emulator()
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.url, headers=headers) as http:
        assert http.post("/v1/apps", json={"app_name": APP, "org_slug": "personal"}).is_success
        secret = {"value": RESULT_KEY}
        assert http.post(f"/v1/apps/{APP}/secrets/FLYJOBS_RESULT_KEY", json=secret).is_success
    for var in ("FLYJOBS_INBOX_HOST", "FLYJOBS_INBOX_BIND", "FLY_PRIVATE_IP", "BUCKET_NAME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in {
        "FLY_API_TOKEN": emulator.token,
        "FLY_API_HOSTNAME": emulator.url,
        "FLY_APP": APP,
        "FLYJOBS_IMAGE": "registry.fly.io/flyjobs-store:latest",
        "FLYJOBS_RESULTS": "store",
        "FLYJOBS_STORE": f"s3://{bucket}/flyjobs",
        "FLYJOBS_RESULT_KEY": RESULT_KEY,
    }.items():
        monkeypatch.setenv(var, value)
    shutdown_runtime()
    yield bucket
    shutdown_runtime()

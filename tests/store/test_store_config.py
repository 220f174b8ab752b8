"""Where the store and the result channel come from, and the errors that say how to fix them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flyjobs import ConfigError
from flyjobs._results.channel import choose_channel
from flyjobs._results.store import DEFAULT_ENDPOINT, StoreConfig
from flyjobs._settings import Settings

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "tid_x", "AWS_SECRET_ACCESS_KEY": "tsec_very_secret"}


def test_flyjobs_store_names_bucket_and_prefix() -> None:
    config = StoreConfig.load("s3://results/team/a", CREDENTIALS)
    assert config is not None
    assert (config.bucket, config.prefix) == ("results", "team/a")
    assert (config.endpoint, config.region) == (DEFAULT_ENDPOINT, "auto")
    assert "tsec_very_secret" not in repr(config)


def test_bucket_name_alone_means_the_flyjobs_prefix_with_fly_storage_variables() -> None:
    env = {
        **CREDENTIALS,
        "BUCKET_NAME": "my-bucket",
        "AWS_ENDPOINT_URL_S3": "https://fly.storage.tigris.dev",
        "AWS_REGION": "auto",
    }
    config = StoreConfig.load(None, env)
    assert config is not None
    assert config.url == "s3://my-bucket/flyjobs"
    assert StoreConfig.load(None, CREDENTIALS) is None


@pytest.mark.parametrize("url", ["my-bucket", "gs://b/p", "s3:///prefix", "s3://"])
def test_a_store_url_that_is_not_s3_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        StoreConfig.load(url, CREDENTIALS)


def test_missing_credentials_are_named() -> None:
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY") as exc:
        StoreConfig.load("s3://b", {"AWS_ACCESS_KEY_ID": "x"})
    assert "set AWS_SECRET_ACCESS_KEY (" in str(exc.value)


def test_store_and_results_come_from_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.flyjobs]\nstore = "s3://b/p"\nresults = "store"\n'
    )
    settings = Settings.load({}, tmp_path)
    assert (settings.store, settings.results) == ("s3://b/p", "store")
    env = {"FLYJOBS_STORE": "s3://c", "FLYJOBS_RESULTS": "inbox"}
    assert (Settings.load(env, tmp_path).store, Settings.load(env, tmp_path).results) == (
        "s3://c",
        "inbox",
    )


def _fly(**env: str) -> tuple[Settings, dict[str, str]]:
    return Settings.load({"FLY_API_TOKEN": "t", **env}, Path("/")), env


def test_auto_prefers_a_reachable_inbox_and_falls_back_to_the_store() -> None:
    settings, env = _fly(FLY_PRIVATE_IP="fdaa::3")
    assert choose_channel(settings, has_store=True, environ=env).mode == "inbox"
    settings, env = _fly(FLYJOBS_INBOX_HOST="10.0.0.2")
    assert choose_channel(settings, has_store=False, environ=env).advertise == "10.0.0.2"
    settings, env = _fly()
    assert choose_channel(settings, has_store=True, environ=env).mode == "store"
    embedded = Settings.load({}, Path("/"))
    assert choose_channel(embedded, has_store=True, environ={}).mode == "inbox"
    # An API on this host (`flyjobs dev`): its machines are local processes.
    for host in ("http://127.0.0.1:4280", "http://localhost:4280", "http://[::1]:4280"):
        settings, env = _fly(FLY_API_HOSTNAME=host)
        channel = choose_channel(settings, has_store=False, environ=env)
        assert (channel.mode, channel.bind, channel.advertise) == (
            "inbox",
            "127.0.0.1",
            "127.0.0.1",
        )


def test_auto_with_neither_names_both_ways() -> None:
    settings, env = _fly()
    with pytest.raises(ConfigError) as exc:
        choose_channel(settings, has_store=False, environ=env)
    for way in ("FLYJOBS_INBOX_HOST", "FLY_PRIVATE_IP", "fly storage create", "FLYJOBS_STORE"):
        assert way in str(exc.value)


def test_an_explicit_channel_that_cannot_work_says_what_it_needs() -> None:
    settings, env = _fly(FLYJOBS_RESULTS="store", FLY_PRIVATE_IP="fdaa::3")
    with pytest.raises(ConfigError, match="FLYJOBS_RESULTS=store needs an object store"):
        choose_channel(settings, has_store=False, environ=env)
    assert choose_channel(settings, has_store=True, environ=env).mode == "store"
    settings, env = _fly(FLYJOBS_RESULTS="inbox")
    with pytest.raises(ConfigError, match="FLYJOBS_INBOX_HOST"):
        choose_channel(settings, has_store=True, environ=env)
    settings, env = _fly(FLYJOBS_RESULTS="s3")
    with pytest.raises(ConfigError, match="auto, inbox, store"):
        choose_channel(settings, has_store=True, environ=env)


def test_a_presigned_url_reaches_the_store_verbatim_through_the_workers_socket_path() -> None:
    """moto does not check signatures, so this checks what the worker sends: the request
    target is the URL's path and query exactly as signed (nothing re-encoded or dropped)."""
    from urllib.parse import urlsplit

    from flyjobs._results.store import Store
    from flyjobs.worker import _split_http_url

    config = StoreConfig.load("s3://b/p", {**CREDENTIALS, "AWS_ENDPOINT_URL_S3": "http://h:9"})
    assert config is not None
    url = Store(config).presign("PUT", "results/fj-1", expires_at=time.time() + 60)
    parts = urlsplit(url)
    assert "X-Amz-Signature=" in parts.query and "%2F" in parts.query
    host_header, host, port, target = _split_http_url(url)
    assert (host_header, host, port) == ("h:9", "h", 9)
    assert target == f"{parts.path}?{parts.query}"

"""Config models reject bad values locally, naming the field; answers are parsed leniently."""

from __future__ import annotations

import base64
from typing import Any

import pydantic
import pytest

from flyjobs.machines import (
    Lease,
    Machine,
    MachineConfig,
    MachineEvent,
    MachineFile,
    StopConfig,
    WaitResult,
)
from flyjobs.machines._validation import SERVER_CONTEXT


def _error(**config: Any) -> str:
    config.setdefault("image", "img")
    with pytest.raises(pydantic.ValidationError) as info:
        MachineConfig.model_validate(config)
    return str(info.value)


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        ({"guest": {"memory_mb": 300}}, "guest.memory_mb", "multiple of 256"),
        ({"guest": {"memory_mb": 0}}, "guest.memory_mb", "multiple of 256"),
        ({"guest": {"cpus": 0}}, "guest.cpus", "at least 1"),
        ({"guest": {"cpu_kind": "gpu"}}, "guest.cpu_kind", "'shared', 'performance'"),
        ({"guest": {"memory_mb": 512}, "size": "shared-cpu-1x"}, "guest and size", "exclusive"),
        (
            {"files": [{"guest_path": "rel/x", "raw_value": "aGk="}]},
            "files.0.guest_path",
            "absolute",
        ),
        (
            {"files": [{"guest_path": "/x", "raw_value": "not base64!"}]},
            "files.0.raw_value",
            "base64",
        ),
        ({"files": [{"guest_path": "/x"}]}, "files.0", "exactly one of raw_value"),
        (
            {"files": [{"guest_path": "/x", "raw_value": "aGk=", "secret_name": "S"}]},
            "files.0",
            "exactly one of raw_value",
        ),
        ({"mounts": [{"volume": "vol_1", "path": "data"}]}, "mounts.0.path", "absolute"),
        ({"restart": {"policy": "sometimes"}}, "restart.policy", "'no', 'always', 'on-failure'"),
        ({"restart": {"max_retries": -1}}, "restart.max_retries", "at least 0"),
        ({"schedule": "yearly"}, "schedule", "'hourly'"),
        ({"stop_config": {"timeout": 301}}, "stop_config.timeout", "cannot exceed 5 minutes"),
        ({"stop_config": {"timeout": "10 seconds"}}, "stop_config.timeout", "Go duration"),
        ({"stop_config": {"signal": "SIGWHAT"}}, "stop_config.signal", "'SIGTERM'"),
        (
            {"services": [{"internal_port": 70000}]},
            "services.0.internal_port",
            "at most 65535",
        ),
        ({"services": [{"protocol": "http"}]}, "services.0.protocol", "'tcp', 'udp'"),
        ({"checks": {"alive": {"type": "icmp"}}}, "checks.alive.type", "'tcp', 'http'"),
        ({"metrics": {"port": 9091}}, "metrics.path", "Field required"),
        ({"image": ""}, "image", "must name an image"),
    ],
)
def test_invalid_config_is_rejected_naming_the_field(
    config: dict[str, Any], field: str, words: str
) -> None:
    message = _error(**config)
    assert field in message
    assert words in message


def test_validation_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="memory_mb"):
        MachineConfig.model_validate({"image": "img", "guest": {"memory_mb": 100}})


def test_request_serialization_leaves_out_unset_fields_and_keeps_extra_ones() -> None:
    config = MachineConfig.model_validate(
        {
            "image": "img",
            "guest": {"cpus": 2, "memory_mb": 512},
            "restart": {"policy": "no"},
            "stop_config": {"timeout": 10},
            "checks": {"alive": {"type": "tcp", "port": 8080, "interval": 15, "timeout": 2.5}},
            "files": [MachineFile.from_bytes("/payload", b"hello", mode=0o600)],
            "future_field": {"x": 1},
        }
    )
    assert config.to_api() == {
        "image": "img",
        "guest": {"cpus": 2, "memory_mb": 512},
        "restart": {"policy": "no"},
        "stop_config": {"timeout": "10s"},
        "checks": {"alive": {"type": "tcp", "port": 8080, "interval": "15s", "timeout": "2500ms"}},
        "files": [
            {
                "guest_path": "/payload",
                "raw_value": base64.b64encode(b"hello").decode(),
                "mode": 0o600,
            }
        ],
        "future_field": {"x": 1},
    }


def test_every_field_the_guide_names_is_modelled() -> None:
    config = MachineConfig.model_validate(
        {
            "image": "img",
            "guest": {"cpus": 1, "memory_mb": 256, "cpu_kind": "shared", "kernel_args": ["x"]},
            "auto_destroy": True,
            "restart": {"policy": "on-failure", "max_retries": 3},
            "env": {"A": "1"},
            "init": {"cmd": ["a"], "entrypoint": ["b"], "exec": ["c"], "tty": False},
            "services": [
                {
                    "protocol": "tcp",
                    "internal_port": 8080,
                    "concurrency": {"type": "requests", "soft_limit": 10, "hard_limit": 20},
                    "ports": [{"port": 443, "handlers": ["tls", "http"]}],
                }
            ],
            "processes": [{"name": "web", "cmd": ["x"], "env": {"B": "2"}, "user": "app"}],
            "schedule": "daily",
            "mounts": [{"volume": "vol_2n0l3vl60qpv635d", "path": "/data"}],
            "metrics": {"port": 9091, "path": "/metrics"},
            "checks": {
                "http-get": {
                    "type": "http",
                    "port": 8080,
                    "method": "GET",
                    "path": "/",
                    "protocol": "https",
                    "tls_server_name": "a.example",
                    "tls_skip_verify": True,
                    "headers": [{"name": "X", "values": ["1"]}],
                    "interval": "15s",
                    "timeout": "10s",
                }
            },
            "files": [{"guest_path": "/s", "secret_name": "SUPER_SECRET"}],
            "metadata": {"k": "v"},
            "stop_config": {"signal": "SIGTERM", "timeout": "1m30s"},
            "dns": {"skip_registration": True},
        }
    )
    assert config.model_extra == {}
    assert config.services is not None and config.services[0].concurrency is not None
    assert config.services[0].concurrency.hard_limit == 20


def test_answers_are_not_rechecked_and_keep_unknown_fields() -> None:
    body = {
        "id": "d5683212a7918e",
        "state": "started",
        "brand_new_field": [1, 2],
        "config": {
            "image": "img",
            "guest": {"memory_mb": 100, "cpus": 0},
            "size": "shared-cpu-1x",
            "services": [{"internal_port": 0, "protocol": "quic"}],
            "files": [{"guest_path": "relative"}],
            "restart": {"policy": ""},
            "unknown_config_key": True,
        },
    }
    machine = Machine.model_validate(body, context=SERVER_CONTEXT)
    assert machine.model_extra == {"brand_new_field": [1, 2]}
    assert machine.config is not None
    # A read-modify-write keeps what this version of flyjobs does not know.
    assert machine.config.to_api()["unknown_config_key"] is True


@pytest.mark.parametrize(
    "request_body",
    [
        {"exit_event": {"exit_code": 3, "oom_killed": True}},
        {"MonitorEvent": {"exit_event": {"exit_code": 3, "oom_killed": True}}},
    ],
)
def test_exit_event_is_found_in_both_places(request_body: dict[str, Any]) -> None:
    event = MachineEvent.model_validate(
        {"type": "exit", "status": "stopped", "timestamp": 1653346106636, "request": request_body}
    )
    assert event.exit_event is not None
    assert (event.exit_event.exit_code, event.exit_event.oom_killed) == (3, True)


def test_machine_exit_event_is_the_latest_exit() -> None:
    machine = Machine.model_validate(
        {
            "id": "m",
            "events": [
                {"type": "exit", "timestamp": 2, "request": {"exit_event": {}}},
                {"type": "start", "timestamp": 1},
                {"type": "exit", "timestamp": 1, "request": {"exit_event": {"exit_code": 9}}},
            ],
        }
    )
    assert machine.exit_event is not None
    assert machine.exit_event.exit_code == 0  # Fly's Go server omits a zero exit code
    assert Machine(id="m").exit_event is None


def test_exited_at_accepts_milliseconds_and_rfc3339() -> None:
    ms = MachineEvent.model_validate(
        {"request": {"exit_event": {"exited_at": 1653346105255}}}
    ).exit_event
    text = MachineEvent.model_validate(
        {"request": {"exit_event": {"exited_at": "2022-05-23T22:48:25.255Z"}}}
    ).exit_event
    assert ms is not None and text is not None
    assert ms.exited_at == text.exited_at


def test_lease_accepts_the_envelope_and_the_flat_form() -> None:
    data = {"nonce": "fed368b018e9", "expires_at": 1666295946, "owner": "hello@fly.io"}
    wrapped = Lease.model_validate({"status": "success", "data": data})
    flat = Lease.model_validate(data)
    assert wrapped.nonce == flat.nonce == "fed368b018e9"
    assert wrapped.expires_at == 1666295946


def test_wait_result_defaults_to_ok() -> None:
    assert WaitResult.model_validate({"ok": True}).state is None


def test_stop_config_turns_seconds_into_a_go_duration() -> None:
    assert StopConfig.model_validate({"timeout": 0.25}).to_api() == {"timeout": "250ms"}

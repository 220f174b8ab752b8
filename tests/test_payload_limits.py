"""Payload limits without an object store: each is a typed error naming the limit and the store
that lifts it (with a store, see tests/store)."""

from __future__ import annotations

import pytest
import remote_funcs as funcs
from store_funcs import big_result

import flyjobs
from flyjobs._calls.plan import MAX_INLINE_PAYLOAD_BYTES
from flyjobs._calls.runtime import Runtime
from flyjobs._wire.machine import MAX_INBOX_RESULT_BYTES


def test_arguments_over_the_inline_limit_name_it_and_the_store(
    runtime: Runtime, no_machine_left: None
) -> None:
    with pytest.raises(flyjobs.SerializationError) as exc:
        funcs.echo.spawn(b"a" * (MAX_INLINE_PAYLOAD_BYTES + 1))
    assert "MAX_INLINE_PAYLOAD_BYTES" in str(exc.value)
    assert "FLYJOBS_STORE" in str(exc.value)


def test_a_result_over_the_inbox_limit_is_result_too_large_error(
    runtime: Runtime, no_machine_left: None
) -> None:
    with pytest.raises(flyjobs.ResultTooLargeError) as exc:
        big_result.remote(MAX_INBOX_RESULT_BYTES + 1024)
    assert f"{MAX_INBOX_RESULT_BYTES // 1048576} MiB" in str(exc.value)
    assert "FLYJOBS_STORE" in str(exc.value)

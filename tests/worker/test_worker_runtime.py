"""``python -m flyjobs.worker`` as real processes, delivering to a real ResultInbox."""

from __future__ import annotations

import http.server
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from worker_funcs import BoomError, Point
from worker_harness import RunWorker, run_worker_process, unwrap

from flyjobs import worker
from flyjobs._exceptions import RemoteError
from flyjobs._machine_side.run import TAIL_CHARS
from flyjobs._results.inbox import ResultInbox
from flyjobs._wire.call_envelope import encode_call
from flyjobs._wire.machine import (
    EXIT_BAD_PAYLOAD,
    EXIT_DEADLINE,
    EXIT_DELIVERY_FAILED,
    EXIT_IMPORT_FAILED,
    EXIT_OK,
    PAYLOAD_GUEST_PATH,
)
from flyjobs._wire.result_envelope import decode_result, encode_result

pytestmark = pytest.mark.anyio


async def test_value_round_trip(inbox: ResultInbox, run_worker: RunWorker) -> None:
    with inbox.expect("c-value", ttl_s=60) as ticket:
        run = await run_worker(
            "worker_funcs:move", Point(1, 2, ("t",)), 5, call_id="c-value", result_url=ticket.url
        )
        assert run.returncode == EXIT_OK, run.stderr
        result = decode_result(await ticket.result())
    assert result.ok and result.call_id == "c-value"
    assert result.value(pickle=False) == Point(6, 2, ("t",))
    timings = result.timings
    assert timings["worker_start"] <= timings["function_start"] <= timings["function_end"]
    assert timings["function_end"] <= time.time()


async def test_kwargs_and_plain_types(inbox: ResultInbox, run_worker: RunWorker) -> None:
    with inbox.expect("c-echo") as ticket:
        run = await run_worker(
            "worker_funcs:echo", (1, 2), {3}, call_id="c-echo", result_url=ticket.url, k=b"v"
        )
        assert run.returncode == EXIT_OK, run.stderr
        value = decode_result(await ticket.result()).value(pickle=False)
    assert value == {"args": ((1, 2), {3}), "kwargs": {"k": b"v"}}


async def test_exception_round_trip_as_its_own_type(
    inbox: ResultInbox, run_worker: RunWorker
) -> None:
    with inbox.expect("c-boom") as ticket:
        run = await run_worker(
            "worker_funcs:boom", "it broke", call_id="c-boom", result_url=ticket.url
        )
        assert run.returncode == EXIT_OK, run.stderr  # the function's exception is a result
        result = decode_result(await ticket.result())
    assert not result.ok and result.error is not None
    assert result.error.stage == "call"
    assert result.error.causes == [{"type": "KeyError", "message": "'inner cause'"}]
    with pytest.raises(BoomError, match="it broke") as caught:
        unwrap(result)
    remote_tb: str = caught.value.remote_traceback  # type: ignore[attr-defined]
    assert 'worker_funcs.py", line' in remote_tb and "raise BoomError(message)" in remote_tb
    assert "KeyError: 'inner cause'" in remote_tb
    assert "flyjobs/worker.py" not in remote_tb  # the worker's own frame is cut


async def test_unimportable_exception_type_becomes_remote_error(
    inbox: ResultInbox, run_worker: RunWorker
) -> None:
    with inbox.expect("c-ghost") as ticket:
        run = await run_worker(
            "worker_funcs:unimportable_error", call_id="c-ghost", result_url=ticket.url
        )
        assert run.returncode == EXIT_OK, run.stderr
        result = decode_result(await ticket.result())
    with pytest.raises(RemoteError, match="no_such_module_anywhere.Ghost: boo") as caught:
        unwrap(result)
    assert "unimportable_error" in caught.value.remote_traceback


async def test_sys_exit_in_the_function_is_a_delivered_error(
    inbox: ResultInbox, run_worker: RunWorker
) -> None:
    with inbox.expect("c-exit") as ticket:
        run = await run_worker("worker_funcs:exits", 3, call_id="c-exit", result_url=ticket.url)
        assert run.returncode == EXIT_OK, run.stderr
        result = decode_result(await ticket.result())
    assert result.error is not None and result.error.type == "SystemExit"
    with pytest.raises(RemoteError, match="SystemExit: 3"):
        unwrap(result)


async def test_unserializable_result_is_a_delivered_error(
    inbox: ResultInbox, run_worker: RunWorker
) -> None:
    with inbox.expect("c-unser") as ticket:
        run = await run_worker(
            "worker_funcs:unserializable_result", call_id="c-unser", result_url=ticket.url
        )
        assert run.returncode == EXIT_OK, run.stderr
        result = decode_result(await ticket.result())
    assert result.error is not None and result.error.stage == "result"
    assert "the result ['ok'][2] of type socket.socket" in result.error.message


async def test_import_failure_delivers_an_error_and_exits_import_failed(
    inbox: ResultInbox, run_worker: RunWorker
) -> None:
    with inbox.expect("c-import") as ticket:
        run = await run_worker("no_such_module_xyz:fn", call_id="c-import", result_url=ticket.url)
        assert run.returncode == EXIT_IMPORT_FAILED
        assert "cannot import no_such_module_xyz:fn" in run.stderr
        result = decode_result(await ticket.result())
    assert result.error is not None and result.error.stage == "import"
    assert result.error.type == "ModuleNotFoundError"
    with pytest.raises(ModuleNotFoundError, match="no_such_module_xyz"):
        unwrap(result)


async def test_missing_function_is_an_import_failure(
    inbox: ResultInbox, run_worker: RunWorker
) -> None:
    with inbox.expect("c-attr") as ticket:
        run = await run_worker("worker_funcs:not_there", call_id="c-attr", result_url=ticket.url)
        assert run.returncode == EXIT_IMPORT_FAILED
        result = decode_result(await ticket.result())
    assert result.error is not None and result.error.type == "AttributeError"


async def test_argument_class_not_importable_is_an_import_failure(
    inbox: ResultInbox, machine_root: Path
) -> None:
    with inbox.expect("c-argcls") as ticket:
        payload = encode_call(
            "builtins:repr",
            (Point(1, 2),),
            call_id="c-argcls",
            deadline=time.time() + 30,
            result_url=ticket.url,
            sys_path=[],  # worker_funcs (the class's module) is not importable by the worker
        )
        (machine_root / PAYLOAD_GUEST_PATH.lstrip("/")).write_bytes(payload)
        run = await run_worker_process(machine_root)
        assert run.returncode == EXIT_IMPORT_FAILED, run.stderr
        result = decode_result(await ticket.result())
    assert result.error is not None and result.error.stage == "arguments"
    assert "cannot import dataclass worker_funcs:Point" in result.error.message


async def test_bad_payload_exits_bad_payload(machine_root: Path) -> None:
    payload = machine_root / PAYLOAD_GUEST_PATH.lstrip("/")
    payload.write_bytes(b"\x93not a payload")
    run = await run_worker_process(machine_root)
    assert run.returncode == EXIT_BAD_PAYLOAD
    assert "bad payload" in run.stderr

    payload.unlink()
    run = await run_worker_process(machine_root)
    assert run.returncode == EXIT_BAD_PAYLOAD
    assert "cannot read the payload" in run.stderr and PAYLOAD_GUEST_PATH in run.stderr


async def test_payload_option_reads_another_file(
    inbox: ResultInbox, machine_root: Path, tmp_path: Path
) -> None:
    with inbox.expect("c-opt") as ticket:
        other = tmp_path / "elsewhere.msgpack"
        other.write_bytes(
            encode_call(
                "worker_funcs:square",
                (9,),
                call_id="c-opt",
                deadline=time.time() + 30,
                result_url=ticket.url,
                sys_path=[str(Path(__file__).parent.parent / "_support")],
            )
        )
        run = await run_worker_process(machine_root, "--payload", str(other))
        assert run.returncode == EXIT_OK, run.stderr
        assert decode_result(await ticket.result()).value(pickle=False) == 81
    run = await run_worker_process(machine_root, "--bogus")
    assert run.returncode == EXIT_BAD_PAYLOAD and "usage" in run.stderr


@pytest.mark.parametrize("fn", ["worker_funcs:sleepy", "worker_funcs:busy"])
async def test_deadline_exits_deadline(inbox: ResultInbox, run_worker: RunWorker, fn: str) -> None:
    with inbox.expect("c-slow") as ticket:
        # The function runs 20 s: ending with EXIT_DEADLINE, not EXIT_OK, is ending at the
        # deadline (no clock needed to tell).
        run = await run_worker(fn, 20.0, call_id="c-slow", result_url=ticket.url, deadline_s=1.0)
        assert run.returncode == EXIT_DEADLINE, run.stderr
        assert "deadline passed" in run.stderr
        assert not ticket.delivered


@pytest.mark.slow
async def test_code_holding_the_gil_is_stopped_shortly_after_the_deadline(
    inbox: ResultInbox, run_worker: RunWorker
) -> None:
    with inbox.expect("c-stuck") as ticket:
        # The regex holds the GIL for hours: any end at all is the watchdog's.
        run = await run_worker(
            "worker_funcs:stuck_in_c", call_id="c-stuck", result_url=ticket.url, deadline_s=1.0
        )
        assert run.returncode == 1  # faulthandler's watchdog: the deadline thread never ran
        assert run.stderr.startswith("Timeout (") and "in stuck_in_c" in run.stderr


async def test_deadline_already_passed(inbox: ResultInbox, run_worker: RunWorker) -> None:
    run = await run_worker(
        "worker_funcs:square", 1, call_id="c-late", result_url="http://127.0.0.1:9/", deadline_s=-1
    )
    assert run.returncode == EXIT_DEADLINE


async def test_refused_delivery_exits_delivery_failed(
    inbox: ResultInbox, run_worker: RunWorker
) -> None:
    with inbox.expect("c-forged") as ticket:
        forged = ticket.url.replace("sig=", "sig=00")
        run = await run_worker("worker_funcs:square", 2, call_id="c-forged", result_url=forged)
        assert run.returncode == EXIT_DELIVERY_FAILED
        assert "refused: HTTP 403" in run.stderr
        assert run.stderr.count("flyjobs.worker:") == 1  # 4xx: no retry
        assert not ticket.delivered


async def test_unreachable_inbox_is_retried_then_exits_delivery_failed(
    run_worker: RunWorker,
) -> None:
    with anyio.fail_after(20):
        run = await run_worker(
            "worker_funcs:square", 2, call_id="c-down", result_url="http://127.0.0.1:9/r"
        )
    assert run.returncode == EXIT_DELIVERY_FAILED
    assert run.stderr.count("result delivery attempt") == 3


async def test_output_tail_is_captured_and_still_written_through(
    inbox: ResultInbox, run_worker: RunWorker
) -> None:
    with inbox.expect("c-chatty") as ticket:
        run = await run_worker("worker_funcs:chatty", 3, call_id="c-chatty", result_url=ticket.url)
        assert run.returncode == EXIT_OK, run.stderr
        result = decode_result(await ticket.result())
    assert result.stdout_tail == "line 0\nline 1\nline 2\n"
    assert result.stderr_tail == "to stderr\n"
    assert run.stdout == "line 0\nline 1\nline 2\n"  # the machine's log keeps everything
    assert "to stderr" in run.stderr


async def test_long_output_keeps_only_the_tail(inbox: ResultInbox, run_worker: RunWorker) -> None:
    with inbox.expect("c-long") as ticket:
        run = await run_worker(
            "worker_funcs:chatty", 20000, call_id="c-long", result_url=ticket.url
        )
        assert run.returncode == EXIT_OK, run.stderr
        result = decode_result(await ticket.result())
    assert len(result.stdout_tail) == TAIL_CHARS
    assert result.stdout_tail.endswith("line 19999\n")
    assert run.stdout.startswith("line 0\n")


async def test_async_function(inbox: ResultInbox, run_worker: RunWorker) -> None:
    with inbox.expect("c-async") as ticket:
        run = await run_worker(
            "worker_funcs:async_double", 21, call_id="c-async", result_url=ticket.url
        )
        assert run.returncode == EXIT_OK, run.stderr
        assert decode_result(await ticket.result()).value(pickle=False) == 42


async def test_async_exception_traceback_starts_in_user_code(
    inbox: ResultInbox, run_worker: RunWorker
) -> None:
    with inbox.expect("c-aboom") as ticket:
        run = await run_worker(
            "worker_funcs:async_boom", "async broke", call_id="c-aboom", result_url=ticket.url
        )
        assert run.returncode == EXIT_OK, run.stderr
        error = decode_result(await ticket.result()).error
    assert error is not None and error.type == "worker_funcs.BoomError"
    frames = [line for line in error.traceback.splitlines() if line.startswith("  File ")]
    assert len(frames) == 1 and "in async_boom" in frames[0], error.traceback


async def test_pickle_call(inbox: ResultInbox, run_worker: RunWorker) -> None:
    with inbox.expect("c-pickle") as ticket:
        run = await run_worker(
            "worker_funcs:echo", Point(1, 1), call_id="c-pickle", result_url=ticket.url, pickle=True
        )
        assert run.returncode == EXIT_OK, run.stderr
        result = decode_result(await ticket.result())
    assert result.value(pickle=True) == {"args": (Point(1, 1),), "kwargs": {}}


async def test_urllib_fallback_delivers_too(inbox: ResultInbox) -> None:
    # The https path (urllib) is exercised over plain http against the same inbox.
    with inbox.expect("c-urllib") as ticket:
        body = encode_result("c-urllib", value=1)
        status, _ = await anyio.to_thread.run_sync(worker._put_urllib, ticket.url, body, 10.0)
        assert status == 204
        assert decode_result(await ticket.result()).value(pickle=False) == 1
        status, _ = await anyio.to_thread.run_sync(worker._put_urllib, ticket.url, body, 10.0)
        assert status == 409


def test_url_parsing() -> None:
    assert worker._split_http_url("http://127.0.0.1:8080/a/b?x=1") == (
        "127.0.0.1:8080",
        "127.0.0.1",
        8080,
        "/a/b?x=1",
    )
    assert worker._split_http_url("http://[fdaa::3]:99/r?s=2#f") == (
        "[fdaa::3]:99",
        "fdaa::3",
        99,
        "/r?s=2",
    )
    assert worker._split_http_url("http://host") == ("host", "host", 80, "/")


def test_payload_path_follows_the_machine_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYJOBS_MACHINE_ROOT", raising=False)
    assert worker.payload_path() == PAYLOAD_GUEST_PATH
    monkeypatch.setenv("FLYJOBS_MACHINE_ROOT", "/tmp/m1")
    assert worker.payload_path() == "/tmp/m1" + PAYLOAD_GUEST_PATH


def test_worker_imports_stay_light() -> None:
    import subprocess

    code = (
        "import sys, flyjobs.worker, flyjobs._machine_side.scheduled_run; "
        "heavy = {'http.client', 'urllib.request', 'ssl', 'email', 'asyncio', 'inspect', "
        "'traceback', 'logging', 'socket', 'signal', 'pydantic', 'httpx', 'anyio', 'dataclasses', "
        "'typing_extensions', 'typing', 're', 'enum'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


class _Store(http.server.BaseHTTPRequestHandler):
    """A store that frames one answer by chunks instead of a Content-Length."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")
            return
        self.send_response(404 if self.path == "/missing" else 403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_store_answer_framed_by_chunks_is_read_all_the_same() -> None:
    # A plain-HTTP store is read by hand (no urllib); an answer whose body's end its
    # Content-Length does not tell is read again through urllib, never cut short.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert worker._get_object(f"{base}/chunked", 10.0) == b"abcdef"
        assert worker._get_object(f"{base}/missing", 10.0) is None
        with pytest.raises(OSError, match="403"):
            worker._get_object(f"{base}/denied", 10.0)
    finally:
        server.shutdown()
        server.server_close()

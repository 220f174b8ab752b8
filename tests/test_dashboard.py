"""The dev dashboard (``flyjobs dev --ui``) in a real headless browser: Debian's chromium,
driven by Playwright, against an emulator whose machines are real calls."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cli_funcs
import httpx
import pytest
from _fly_helpers import APP, fly_env
from _remote_helpers import metadata

from flyjobs._calls.runtime import get_runtime
from flyjobs.emulator import RunningEmulator
from flyjobs.machines import Machine

pytest.importorskip(
    "playwright.sync_api", reason="the dev extra installs playwright: pip install -e '.[dev]'"
)
from playwright import sync_api  # only once it is known to be installed

#: Set (to 1) by .ci/run, which installs chromium: there a missing browser fails the tests.
REQUIRE_BROWSER_ENV = "FLYJOBS_REQUIRE_BROWSER"
NO_BROWSER = (
    "no chromium on PATH: the dashboard's browser tests drive Debian's chromium; to run them,"
    " install it (apt-get install chromium)"
)
BROWSER_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
HOURLY_EVERY_HALF_SECOND = 7200.0
WAIT_MS = 30_000


@pytest.fixture
def emulator(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningEmulator]:
    emulator = make_emulator(ui=True, time_scale=HOURLY_EVERY_HALF_SECOND)
    settings = fly_env(emulator, monkeypatch)
    next(settings)
    yield emulator
    next(settings, None)


def chromium_or_skip() -> str:
    """The chromium executable on PATH; without one the test is skipped, saying how to run it,
    or fails when FLYJOBS_REQUIRE_BROWSER=1."""
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
            pytest.fail(f"{NO_BROWSER} ({REQUIRE_BROWSER_ENV}=1 requires the browser tests)")
        pytest.skip(NO_BROWSER)
    return chromium


@pytest.fixture
def browser() -> Iterator[sync_api.Browser]:
    chromium = chromium_or_skip()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        yield browser
        browser.close()


def _scheduled_machine(emulator: RunningEmulator) -> str:
    config = {
        "image": "jobs",
        "schedule": "hourly",
        "init": {"exec": ["python", "-c", "print('tick')"]},
        "metadata": {"flyjobs_function": "jobs:nightly"},
    }
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.url, headers=headers) as http:
        response = http.post(f"/v1/apps/{APP}/machines", json={"config": config})
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


def _running(machine_ids: list[str | None]) -> list[str]:
    runtime = get_runtime()
    machines = runtime.portal.call(lambda: runtime.client.list_machines(APP))
    states = {m.id: m.state for m in machines}
    ids = [m for m in machine_ids if m is not None and states.get(m) == "started"]
    return ids if len(ids) == len(machine_ids) else []


def _batch_machines() -> list[Machine]:
    runtime = get_runtime()
    machines = runtime.portal.call(lambda: runtime.client.list_machines(APP))
    return [m for m in machines if m.config and (m.config.metadata or {}).get("flyjobs_batch_id")]


@pytest.mark.slow
def test_the_dashboard_shows_calls_machines_batches_and_schedules_live(
    emulator: RunningEmulator, browser: sync_api.Browser, tmp_path: Path
) -> None:
    assert emulator.ui_url is not None
    assert cli_funcs.square.remote(3) == 9
    scheduled = _scheduled_machine(emulator)
    finish = tmp_path / "finish"
    call = cli_funcs.print_then_wait.spawn(str(finish))
    batch = cli_funcs.print_then_wait.starmap([(str(finish),), (str(finish),)])
    while not (running := _running([call.machine_id])):
        time.sleep(0.02)
    # The batch starts its machines as it reads its inputs: wait for both.
    while len(batch_machines := _batch_machines()) < 2:
        time.sleep(0.02)
    (batch_id,) = {metadata(m).get("flyjobs_batch_id") for m in batch_machines}

    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(emulator.ui_url)  # the key becomes a cookie; the page is /ui/
    assert page.url.endswith("/ui/")
    expect = sync_api.expect
    row = page.locator("#machines tr", has_text=running[0])
    expect(row).to_contain_text("started")
    expect(row).to_contain_text("cli_funcs:print_then_wait")
    batch_row = page.locator("#batches tr", has_text=batch_id)
    expect(batch_row).to_contain_text("0/2", timeout=WAIT_MS)
    expect(batch_row.locator("td").nth(2)).to_have_text("0")  # inputs done
    expect(page.locator("#schedules tr", has_text=scheduled)).to_contain_text("hourly")
    expect(page.locator("#schedules tr", has_text=scheduled)).to_contain_text(
        "exit 0", timeout=WAIT_MS
    )
    expect(page.locator("#apps tr", has_text=APP)).to_be_visible()
    expect(page.locator("#machines tr", has_text="cli_funcs:square")).to_contain_text("destroyed")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # The calls end: the open page follows without a reload.
    finish.touch()
    assert call.result(timeout_s=30) == "done"
    assert list(batch) == ["done", "done"]
    expect(row).to_contain_text("destroyed", timeout=WAIT_MS)
    expect(batch_row).to_contain_text("2/2", timeout=WAIT_MS)
    expect(batch_row.locator("td").nth(2)).to_have_text("2")
    # Three inputs on one machine: inputs done counts the inputs, not the machine.
    outcomes = list(cli_funcs.square.map([1, 2, 3], max_machines=1).outcomes())
    assert [o.value for o in outcomes] == [1, 4, 9] and outcomes[0].call_id is not None
    reused = page.locator("#batches tr", has_text=outcomes[0].call_id.rsplit("-", 1)[0])
    expect(reused).to_contain_text("1/1", timeout=WAIT_MS)
    expect(reused.locator("td").nth(2)).to_have_text("3")
    page.screenshot(path=str(tmp_path / "dashboard-after.png"), full_page=True)

    # A machine's page: its events and its logs.
    page.click(f"a:has-text('{running[0]}')")
    expect(page.locator("#logs")).to_contain_text("started\nfinished")
    expect(page.locator("#events")).to_contain_text("exit")
    page.screenshot(path=str(tmp_path / "machine.png"), full_page=True)


def test_the_dashboard_needs_its_key(emulator: RunningEmulator, browser: sync_api.Browser) -> None:
    page = browser.new_page()
    response = page.goto(emulator.url + "/ui/")
    assert response is not None and response.status == 403
    assert "flyjobs dev --ui" in page.inner_text("body")
    # The API itself still wants its token.
    assert httpx.get(emulator.url + f"/v1/apps/{APP}/machines").status_code == 401


def test_flyjobs_dev_ui_prints_the_dashboard_url(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "flyjobs", "dev", "--port", "0", "--ui", "--token", "t0ken-x"]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(3)]
        (line,) = [b for b in banner if b.startswith("dashboard: ")]
        url = line.split(" ", 1)[1].strip()
        assert "/ui/?key=" in url
        with httpx.Client(follow_redirects=True) as http:
            page = http.get(url)
            assert page.status_code == 200 and "<h2>Machines</h2>" in page.text
        with httpx.Client(follow_redirects=True) as stranger:
            assert stranger.get(url.split("?")[0] + "?key=wrong").status_code == 403
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)


def test_inputs_done_counts_only_marks_of_the_machines_own_batch(
    emulator: RunningEmulator,
) -> None:
    # A batch machine's output that names inputs of another batch (as a subprocess of a
    # function could write it, past the worker) is not counted as inputs done.
    lines = [
        *(f"flyjobs-call end fjb-other-{i}" for i in range(3)),
        "flyjobs-call start fjb-mine-0",
        "flyjobs-call end fjb-mine-0",
    ]
    config = {
        "image": "jobs",
        "init": {"exec": ["python", "-c", f"print({chr(10).join(lines)!r})"]},
        "metadata": {"flyjobs_function": "jobs:f", "flyjobs_batch_id": "fjb-mine"},
    }
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=30) as http:
        response = http.post(f"/v1/apps/{APP}/machines", json={"config": config})
        assert response.status_code == 200, response.text
        machine_id = response.json()["id"]
        http.get(f"/v1/apps/{APP}/machines/{machine_id}/wait", params={"state": "stopped"})
    assert emulator.ui_url is not None
    with httpx.Client(follow_redirects=True) as browser_like:
        page = browser_like.get(emulator.ui_url).text
    row = page.split("<code>fjb-mine</code>", 1)[1].split("</tr>", 1)[0]
    assert [cell.split("<", 1)[0] for cell in row.split("<td>")[2:3]] == ["1"]  # inputs done


FAILING_JOBS = """
import flyjobs

@flyjobs.remote(schedule="weekly")
def weekly_report() -> None:
    raise ValueError("upstream returned 0 rows")

@flyjobs.remote(schedule=flyjobs.Cron("0 * * * *"))
def hourly_sync() -> None:
    raise ValueError("the feed is down")
"""


def test_the_dashboard_shows_failed_runs_and_failed_inputs(
    emulator: RunningEmulator, browser: sync_api.Browser, tmp_path: Path
) -> None:
    # Scheduled functions that raise on every run (their machines exit 0), one of each kind.
    (tmp_path / "failing.py").write_text(FAILING_JOBS)
    env = {k: v for k, v in os.environ.items() if k.startswith(("FLY", "FLYJOBS"))}
    deploy = subprocess.run(
        [sys.executable, "-m", "flyjobs", "schedule", "deploy", "failing.py"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert deploy.returncode == 0, deploy.stderr
    # A batch of 12 inputs on 2 machines, 11 of which raise.
    inputs = [(0,)] * 11 + [(3,)]
    outcomes = list(cli_funcs.fetch_rows.starmap(inputs, max_machines=2).outcomes())
    assert sum(1 for o in outcomes if not o.ok) == 11
    assert outcomes[0].call_id is not None
    batch_id = outcomes[0].call_id.rsplit("-", 1)[0]

    assert emulator.ui_url is not None
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(emulator.ui_url)
    expect = sync_api.expect
    batch_row = page.locator("#batches tr", has_text=batch_id)
    expect(batch_row.locator("td").nth(2)).to_have_text("12")  # inputs done
    # Progress in inputs, out of the batch's size (the map knows it: a list has a len()).
    expect(batch_row.locator("td").nth(3)).to_contain_text("12/12 inputs")
    expect(batch_row.locator("td").nth(4)).to_have_text("11")  # inputs failed
    for function, message in [
        ("failing:weekly_report", "upstream returned 0 rows"),
        ("failing:hourly_sync", "the feed is down"),  # the cron resident: no config.schedule
    ]:
        row = page.locator("#schedules tr", has_text=function)
        expect(row).to_contain_text(f"failed: builtins.ValueError: {message}", timeout=WAIT_MS)
        expect(row).not_to_contain_text("exit 0")
    page.screenshot(path=str(tmp_path / "failures.png"), full_page=True)


def test_without_chromium_the_browser_tests_skip_saying_how_to_run_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a fresh machine: no chromium
    monkeypatch.delenv(REQUIRE_BROWSER_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        chromium_or_skip()


def test_without_chromium_the_browser_tests_fail_where_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(REQUIRE_BROWSER_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=REQUIRE_BROWSER_ENV):
        chromium_or_skip()

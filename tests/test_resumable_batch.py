"""Resumable batches on the embedded emulator, journaled in SQLite under the project's
.flyjobs/: a rerun runs only what the journal lacks, even after the first run was SIGKILLed."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner
from store_funcs import counted_square

import flyjobs
from flyjobs._calls.runtime import shutdown_runtime
from flyjobs.cli import cli

SUPPORT = Path(__file__).resolve().parent / "_support"
N = 24

SCRIPT = """
import os, signal, sys
import store_funcs
ledger, kill_after = sys.argv[1], int(sys.argv[2])
inputs = [(x, ledger, 0.2) for x in range({n})]
results = store_funcs.counted_square.starmap(inputs, batch="nightly", max_machines=4)
for i, value in enumerate(results):
    print(value, flush=True)
    if i + 1 == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up at all
"""


def _run(folder: Path, ledger: Path, kill_after: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_", "AWS_"))}
    env.update(PYTHONPATH=str(SUPPORT), BUCKET_NAME="")
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(n=N), str(ledger), str(kill_after)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_a_sigkilled_batch_reruns_only_what_is_missing(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    first = _run(tmp_path, ledger, kill_after=N // 2)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert [int(v) for v in first.stdout.split()] == [x * x for x in range(N // 2)]
    assert (tmp_path / ".flyjobs" / "journal.sqlite3").exists()

    second = _run(tmp_path, ledger, kill_after=0)
    assert second.returncode == 0, second.stderr
    assert [int(v) for v in second.stdout.split()] == [x * x for x in range(N)]
    runs = ledger.read_text().split()
    # Every input ran at least once; at most the 4 machines in flight at the kill ran twice.
    assert sorted(set(map(int, runs))) == list(range(N))
    assert len(runs) <= N + 4, runs

    third = _run(tmp_path, ledger, kill_after=0)
    assert [int(v) for v in third.stdout.split()] == [x * x for x in range(N)]
    assert ledger.read_text().split() == runs  # nothing ran again


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The embedded runtime started in a project folder of its own."""
    for var in ("FLY_API_TOKEN", "FLYJOBS_STORE", "BUCKET_NAME", "FLYJOBS_RESULTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    shutdown_runtime()
    yield tmp_path
    shutdown_runtime()


def test_batch_ls_and_rm(project: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    inputs = [(x, str(ledger)) for x in range(3)]
    assert list(counted_square.starmap(inputs, batch="b-1")) == [0, 1, 4]
    result = CliRunner().invoke(cli, ["batch", "ls"])
    assert result.exit_code == 0 and result.output.startswith("b-1\t3 finished"), result.output
    assert list(counted_square.starmap(inputs, batch="b-1")) == [0, 1, 4]
    assert len(ledger.read_text().split()) == 3
    result = CliRunner().invoke(cli, ["batch", "rm", "b-1"])
    assert result.exit_code == 0 and "3 finished" in result.output
    assert CliRunner().invoke(cli, ["batch", "rm", "b-1"]).exit_code == 1
    assert list(counted_square.starmap(inputs, batch="b-1")) == [0, 1, 4]
    assert len(ledger.read_text().split()) == 6


def test_a_bad_batch_name_is_refused_before_any_machine(project: Path) -> None:
    with pytest.raises(flyjobs.ConfigError, match="batch name"):
        counted_square.starmap([(1, "x")], batch="../etc")


def test_a_recorded_value_that_no_longer_decodes_runs_its_input_again(
    project: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = tmp_path / "ledger.txt"
    inputs = [(x, str(ledger)) for x in range(3)]
    assert list(counted_square.starmap(inputs, batch="b-2")) == [0, 1, 4]
    # A record damaged (or written by code whose classes have changed since): 0xc1 is never
    # valid msgpack.
    with closing(sqlite3.connect(project / ".flyjobs" / "journal.sqlite3")) as db, db:
        db.execute(
            "UPDATE finished SET value = x'c1' WHERE rowid = (SELECT MIN(rowid) FROM finished)"
        )
    with caplog.at_level(logging.WARNING, logger="flyjobs"):
        assert list(counted_square.starmap(inputs, batch="b-2")) == [0, 1, 4]
    assert len(ledger.read_text().split()) == 4  # the damaged one ran again, only it
    assert "cannot be decoded" in caplog.text and "b-2" in caplog.text


def test_a_journal_file_that_is_not_one_is_a_config_error_naming_it(project: Path) -> None:
    journal = project / ".flyjobs" / "journal.sqlite3"
    journal.parent.mkdir()
    journal.write_bytes(b"not a database, " * 512)
    with pytest.raises(
        flyjobs.ConfigError, match=r"journal\.sqlite3 is not a flyjobs batch journal"
    ):
        counted_square.starmap([(1, "x")], batch="b-3")
    result = CliRunner().invoke(cli, ["batch", "ls"])
    assert (
        result.exit_code != 0 and "journal.sqlite3 is not a flyjobs batch journal" in result.output
    )


def test_a_journal_path_that_is_a_folder_is_a_config_error_naming_it(project: Path) -> None:
    (project / ".flyjobs" / "journal.sqlite3").mkdir(parents=True)
    with pytest.raises(flyjobs.ConfigError, match=r"journal\.sqlite3 cannot be opened"):
        counted_square.starmap([(1, "x")], batch="b-5")
    result = CliRunner().invoke(cli, ["batch", "ls"])
    assert result.exit_code != 0 and "journal.sqlite3 cannot be opened" in result.output


def test_an_error_of_the_journal_mid_batch_is_raised_as_itself(project: Path) -> None:
    journal = project / ".flyjobs" / "journal.sqlite3"

    def inputs() -> Iterator[tuple[int, str]]:
        yield (1, "x")
        # Read in the batch's reading thread: the journal's table goes before the next lookup.
        # closing(): sqlite3's own context manager commits but leaves the connection open
        # (Python 3.13 warns about it when it is collected, in whatever test runs then).
        with closing(sqlite3.connect(journal)) as db, db:
            db.execute("DROP TABLE finished")
        yield (2, "x")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        list(counted_square.starmap(inputs(), batch="b-4"))

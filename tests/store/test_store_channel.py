"""Results through the object store, called as from outside Fly: a standalone emulator in Fly
mode, ``FLYJOBS_RESULTS=store``, no ``FLYJOBS_INBOX_HOST``, and moto as the S3 server."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import cli_funcs
import pytest
import store_funcs as funcs
from _store_helpers import APP, live_machines, objects
from _waiting import eventually
from click.testing import CliRunner

import flyjobs
from flyjobs._calls.runtime import get_runtime, shutdown_runtime
from flyjobs._results.store import Store, StoreConfig
from flyjobs.cli import cli


def test_a_value_comes_back_through_the_store_and_leaves_no_object(fly_store: str) -> None:
    assert funcs.double.remote(21) == 42
    runtime = get_runtime()
    assert runtime.channel.mode == "store"
    assert [c.result(timeout_s=60) for c in [funcs.double.spawn(i) for i in range(3)]] == [0, 2, 4]
    assert objects(fly_store) == []
    eventually(lambda: live_machines() == [], "every machine is gone")


def test_the_functions_own_exception_type(fly_store: str) -> None:
    with pytest.raises(funcs.StoreTestError, match="bad input"):
        funcs.fail.remote("bad input")
    assert objects(fly_store) == []


def test_a_machine_crash_is_machine_crashed_error(fly_store: str) -> None:
    with pytest.raises(flyjobs.MachineCrashedError) as exc:
        funcs.crash.remote(3)
    assert exc.value.exit_code == 3
    assert objects(fly_store) == []
    eventually(lambda: live_machines() == [], "every machine is gone")


def test_a_5_mb_argument_and_a_20_mb_result_travel_through_the_store(fly_store: str) -> None:
    data = bytes(range(256)) * (5 * 4096)
    assert funcs.size_of.remote(data) == (len(data), data[-16:])
    result = funcs.blob.remote(20)
    assert len(result) == 20 * 1048576 and result[:256] == bytes(range(256))
    assert objects(fly_store) == []


def test_a_batch_journal_lives_in_the_store(fly_store: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    inputs = [(x, str(ledger)) for x in range(4)]
    assert list(funcs.counted_square.starmap(inputs, batch="in-store")) == [0, 1, 4, 9]
    # One record per input, and what the batch's runs spent (not an input).
    keys = sorted(info.key.rsplit("/", 1)[-1] for info in objects(fly_store, "batches/in-store"))
    assert len(keys) == 5 and "spent_usd" in keys
    assert not (tmp_path / ".flyjobs").exists()
    listed = CliRunner().invoke(cli, ["batch", "ls"])
    assert listed.output.startswith("in-store\t4 finished"), listed.output
    assert list(funcs.counted_square.starmap(inputs, batch="in-store")) == [0, 1, 4, 9]
    assert len(ledger.read_text().split()) == 4  # the rerun ran nothing
    assert CliRunner().invoke(cli, ["batch", "rm", "in-store"]).exit_code == 0
    assert objects(fly_store) == []


class _RunsCode:
    """Unpickling it touches a file: what a forged pickled record would do in the caller."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (Path(self.marker),))


def test_store_journal_records_that_were_forged_or_moved_are_never_decoded(
    fly_store: str, tmp_path: Path
) -> None:
    """Anyone who can write to the bucket can write a journal record: records are sealed with
    the result key (and their input), so a forged one, even pickled code, runs nothing here,
    and a record copied to another input's name is not taken for its value."""
    ledger, marker = tmp_path / "ledger.txt", tmp_path / "pwned"
    fn = funcs.counted_square.with_options(pickle=True)
    inputs = [(x, str(ledger)) for x in range(4)]
    assert list(fn.starmap(inputs, batch="sealed")) == [0, 1, 4, 9]
    config = StoreConfig.load(f"s3://{fly_store}/flyjobs")
    assert config is not None
    store = Store(config)
    keys = sorted(info.key for info in objects(fly_store, "batches/sealed"))
    records = {key: store.get_sync(key) for key in keys}
    forged, moved_to, moved_from = keys[0], keys[1], keys[2]
    store.put_sync(forged, pickle.dumps(_RunsCode(str(marker))))
    record = records[moved_from]
    assert record is not None
    store.put_sync(moved_to, record)
    assert list(fn.starmap(inputs, batch="sealed")) == [0, 1, 4, 9]
    assert not marker.exists(), "a forged journal record ran code in the caller"
    assert len(ledger.read_text().split()) == 4 + 2  # the forged and the moved inputs ran again
    assert CliRunner().invoke(cli, ["batch", "rm", "sealed"]).exit_code == 0


def test_journal_records_copied_to_another_batch_are_not_its_values(
    fly_store: str, tmp_path: Path
) -> None:
    """A bucket writer copies ``batches/nightly-1/*`` to ``batches/nightly-2/``: the seal binds
    the batch's name (and app), so night 2 runs every input instead of yielding night 1's."""
    ledger = tmp_path / "ledger.txt"
    inputs = [(x, str(ledger)) for x in range(3)]
    assert list(funcs.counted_square.starmap(inputs, batch="nightly-1")) == [0, 1, 4]
    config = StoreConfig.load(f"s3://{fly_store}/flyjobs")
    assert config is not None
    store = Store(config)
    for info in objects(fly_store, "batches/nightly-1"):
        record = store.get_sync(info.key)
        assert record is not None
        store.put_sync(info.key.replace("nightly-1", "nightly-2"), record)
    assert list(funcs.counted_square.starmap(inputs, batch="nightly-2")) == [0, 1, 4]
    assert len(ledger.read_text().split()) == 3 + 3  # night 2 ran every input itself
    for name in ("nightly-1", "nightly-2"):
        assert CliRunner().invoke(cli, ["batch", "rm", name]).exit_code == 0


def test_a_store_journal_without_a_result_key_is_refused_before_any_machine(
    bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The embedded emulator (no Fly settings) with a store: no result key to seal records with.
    for var in (
        "FLY_API_TOKEN",
        "FLY_API_HOSTNAME",
        "FLY_APP",
        "FLYJOBS_IMAGE",
        "FLYJOBS_RESULT_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FLYJOBS_STORE", f"s3://{bucket}/flyjobs")
    shutdown_runtime()
    try:
        with pytest.raises(flyjobs.ConfigError, match="FLYJOBS_RESULT_KEY"):
            funcs.counted_square.starmap([(1, str(tmp_path / "ledger"))], batch="unsealed")
        assert not (tmp_path / "ledger").exists()
    finally:
        shutdown_runtime()


def test_a_batch_over_the_store_runs_fixed_slices_on_few_machines(fly_store: str) -> None:
    values = list(funcs.double.map(range(12), max_machines=3))
    assert values == [2 * x for x in range(12)]
    runtime = get_runtime()
    machines = runtime.portal.call(lambda: runtime.client.list_machines(APP, include_deleted=True))
    assert 1 < len(machines) <= 3  # each took a slice of the inputs
    assert objects(fly_store) == []
    eventually(lambda: live_machines() == [], "every machine is gone")


def test_a_slice_whose_machine_crashes_midway_reruns_the_rest(fly_store: str) -> None:
    inputs = [(x, 99 if x == 1 else 0) for x in range(4)]
    values = list(funcs.crash_at.starmap(inputs, max_machines=1, return_exceptions=True))
    assert values[0] == 0 and values[2:] == [2, 3]
    assert isinstance(values[1], flyjobs.MachineCrashedError)
    assert objects(fly_store) == []
    eventually(lambda: live_machines() == [], "every machine is gone")


@pytest.mark.slow  # several seconds: run in the slow suite
def test_a_slices_results_arrive_while_its_machine_still_runs(fly_store: str) -> None:
    inputs = [(0, 0.0), (1, 0.0), (2, 6.0)]
    results = funcs.slow_square.starmap(inputs, max_machines=1)
    assert next(results) == 0
    assert len(live_machines()) == 1  # the slice's last input is still running
    assert list(results) == [1, 4]
    assert objects(fly_store) == []


@pytest.mark.parametrize("counts", [[1, 2, 3], [2]])
def test_flyjobs_logs_of_each_input_of_a_batch_through_the_store(
    fly_store: str, counts: list[int]
) -> None:
    # The machine takes a fixed slice (three inputs; or one, when only one is ready), and is
    # named for the batch, not for an input.
    outcomes = list(cli_funcs.print_lines.map(counts, max_machines=1).outcomes())
    (machine,) = get_runtime().portal.call(_all_machines)
    assert str(machine.name).endswith("-m0")
    for outcome, count in zip(outcomes, counts, strict=True):
        assert outcome.call_id is not None
        shown = CliRunner().invoke(cli, ["logs", outcome.call_id])
        assert shown.exit_code == 0, shown.output
        assert shown.output.splitlines() == [f"line {i:05d} " + "x" * 60 for i in range(count)]


async def _all_machines() -> list[Any]:
    return await get_runtime().client.list_machines(APP, include_deleted=True)

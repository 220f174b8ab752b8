"""Fly's logs API shape at ``/api/v1/apps/{app}/logs``, from the machine's output."""

from __future__ import annotations

import httpx
from _emu_helpers import create, wait_ok

from flyjobs._wire.machine import MACHINE_ROOT_ENV

PRINT_LINES = [
    "python",
    "-c",
    "import sys\nfor i in range(5): print('line', i)\nprint('err', file=sys.stderr)",
]


def test_logs_shape_and_paging(client: httpx.Client, app: str) -> None:
    machine = create(client, app, PRINT_LINES, auto_destroy=True, restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "destroyed")
    url = f"/api/v1/apps/{app}/logs"
    body = client.get(url, params={"instance": machine["id"]}).json()
    messages = [entry["attributes"]["message"] for entry in body["data"]]
    assert messages == [f"line {i}" for i in range(5)] + ["err"]
    entry = body["data"][0]
    assert set(entry["attributes"]) == {
        "timestamp",
        "message",
        "level",
        "instance",
        "region",
        "meta",
    }
    assert entry["attributes"]["instance"] == machine["id"]
    assert entry["attributes"]["timestamp"].endswith("Z")
    assert len({e["id"] for e in body["data"]}) == 6
    later = client.get(
        url, params={"instance": machine["id"], "next_token": body["meta"]["next_token"]}
    )
    assert later.json()["data"] == []


def test_logs_of_the_whole_app_and_unknowns(client: httpx.Client, app: str) -> None:
    one = create(client, app, ["python", "-c", "print('one')"], restart={"policy": "no"})
    two = create(client, app, ["python", "-c", "print('two')"], restart={"policy": "no"})
    wait_ok(client, app, one["id"], "stopped")
    wait_ok(client, app, two["id"], "stopped")
    data = client.get(f"/api/v1/apps/{app}/logs").json()["data"]
    assert sorted(e["attributes"]["message"] for e in data) == ["one", "two"]
    assert (
        client.get(f"/api/v1/apps/{app}/logs", params={"instance": "00000000000000"}).status_code
        == 404
    )
    assert client.get("/api/v1/apps/no-such-app/logs").status_code == 404
    assert client.get(f"/api/v1/apps/{app}/logs", params={"next_token": "%%%"}).status_code == 400


def test_a_machine_cannot_forge_the_logs_of_another(client: httpx.Client, app: str) -> None:
    victim = create(client, app, ["python", "-c", "print('genuine')"], restart={"policy": "no"})
    wait_ok(client, app, victim["id"], "stopped")
    # The attacker appends to every file under its app's folder (its own root's grandparent)
    # and plants log files in every machine folder, where a log file would be read from.
    forge = (
        "import os\n"
        "data = os.path.dirname(os.path.dirname(os.environ['" + MACHINE_ROOT_ENV + "']))\n"
        "for folder, _dirs, files in os.walk(data):\n"
        "    for name in files + ['machine.log', 'output.log']:\n"
        "        with open(os.path.join(folder, name), 'a') as f:\n"
        "            f.write('FORGED\\n')\n"
        "print('attacker done', flush=True)\n"
    )
    attacker = create(client, app, ["python", "-c", forge], restart={"policy": "no"})
    wait_ok(client, app, attacker["id"], "stopped")
    url = f"/api/v1/apps/{app}/logs"
    of_victim = client.get(url, params={"instance": victim["id"]}).json()["data"]
    assert [e["attributes"]["message"] for e in of_victim] == ["genuine"]
    of_attacker = client.get(url, params={"instance": attacker["id"]}).json()["data"]
    assert [e["attributes"]["message"] for e in of_attacker] == ["attacker done"]


def test_an_unfinished_last_line_and_long_lines_are_kept(client: httpx.Client, app: str) -> None:
    code = "import sys; sys.stdout.write('x' * 40000 + '\\n' + 'no newline at the end')"
    machine = create(client, app, ["python", "-c", code], restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    data = client.get(f"/api/v1/apps/{app}/logs", params={"instance": machine["id"]}).json()
    messages = [e["attributes"]["message"] for e in data["data"]]
    assert "".join(messages[:-1]) == "x" * 40000
    assert messages[-1] == "no newline at the end"


def test_the_next_token_stays_small_however_many_machines_the_app_had(
    client: httpx.Client, app: str
) -> None:
    """A reader that has read destroyed machines to their end carries no line number for
    each in its token (a batch of a thousand one-input machines made a URL too long)."""
    logs = f"/api/v1/apps/{app}/logs"
    made = []
    for i in range(40):
        m = create(client, app, ["echo", f"line of {i}"], restart={"policy": "no"})
        made.append(m["id"])
    for machine_id in made:
        wait_ok(client, app, machine_id, "stopped")
        assert client.delete(f"/v1/apps/{app}/machines/{machine_id}").status_code == 200
    for machine_id in made:
        wait_ok(client, app, machine_id, "destroyed")
    first = client.get(logs).json()
    assert sorted(e["attributes"]["message"] for e in first["data"]) == sorted(
        f"line of {i}" for i in range(40)
    )
    token = first["meta"]["next_token"]
    assert len(token) < 100, token
    # Nothing is read twice, and a machine made after the token is read from its first line.
    assert client.get(logs, params={"next_token": token}).json()["data"] == []
    later = create(client, app, ["echo", "later"], restart={"policy": "no"})
    wait_ok(client, app, later["id"], "stopped")
    again = client.get(logs, params={"next_token": token}).json()
    assert [e["attributes"]["message"] for e in again["data"]] == ["later"]
    assert client.get(logs, params={"next_token": "bm90IGEgdG9rZW4"}).status_code == 400

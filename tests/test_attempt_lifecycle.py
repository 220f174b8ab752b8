"""One attempt lifecycle: a machine attempt's wait, timeout and exit are handled in one place
(`flyjobs._calls.attempt.MachineRun`), and the result channel is used only through its protocol
(`flyjobs._results.channel.ResultTicket`, `Channel`): the copies that drifted apart do not come
back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import flyjobs

ROOT = Path(flyjobs.__file__).parent
RESULTS = ROOT / "_results"
#: What a caller outside `flyjobs._results` must not tell apart: the channel's ticket types.
_CHANNEL_TYPES = {"Ticket", "StoreTicket", "ResultTicket", "Channel", "ResultInbox"}


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(ROOT.rglob("*.py"))]


def _calls(tree: ast.Module, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == name)
        )
    ]


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }


def test_no_caller_outside_the_results_package_tells_channels_apart() -> None:
    found = []
    for path, tree in _sources():
        if path.is_relative_to(RESULTS):
            continue
        where = path.relative_to(ROOT.parent)
        for call in _calls(tree, "isinstance"):
            if len(call.args) == 2 and _names(call.args[1]) & _CHANNEL_TYPES:
                found.append(f"{where}:{call.lineno} isinstance on a channel type")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "mode":
                if "channel" in _names(node.value):
                    found.append(f"{where}:{node.lineno} reads channel.mode")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("what", "count"),
    [
        ("exit_error", 1),  # a machine's exit without a result becomes an error in one place
        ("_collect", 1),  # result or exit, awaited together
    ],
)
def test_the_lifecycle_steps_have_one_call_site(what: str, count: int) -> None:
    sites = [
        f"{path.relative_to(ROOT.parent)}:{call.lineno}"
        for path, tree in _sources()
        for call in _calls(tree, what)
    ]
    assert len(sites) == count, sites
    assert all(site.startswith("flyjobs/_calls/attempt.py:") for site in sites), sites


def test_the_timeout_message_is_written_once() -> None:
    texts = [
        path.relative_to(ROOT.parent)
        for path, _tree in _sources()
        for _ in range(path.read_text().count("did not finish within"))
        if path.name != "_exceptions.py"
    ]
    assert [str(p) for p in texts] == ["flyjobs/_calls/attempt.py"]

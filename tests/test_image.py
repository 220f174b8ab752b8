"""The images' command, run exactly as their Dockerfiles write it, in a fresh virtualenv.

There is no Docker engine here; what an image adds (Python, flyjobs, the user's code, the command)
is rebuilt as a virtualenv holding flyjobs and only what the worker needs at run time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from flyjobs._results.inbox import ResultInbox
from flyjobs._wire.call_envelope import encode_call
from flyjobs._wire.machine import MACHINE_ROOT_ENV, PAYLOAD_GUEST_PATH
from flyjobs._wire.result_envelope import decode_result

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = [REPO / "Dockerfile", REPO / "worker_image" / "Dockerfile"]

pytestmark = pytest.mark.slow


def image_command(dockerfile: Path) -> list[str]:
    """The exec-form CMD (or ENTRYPOINT) of a Dockerfile."""
    commands = [
        json.loads(line.split(None, 1)[1])
        for line in dockerfile.read_text().splitlines()
        if line.startswith(("CMD ", "ENTRYPOINT "))
    ]
    assert len(commands) == 1, f"{dockerfile}: expected one CMD/ENTRYPOINT"
    command: list[str] = commands[0]
    return command


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # flyjobs itself without its client dependencies: the worker must run on msgpack alone.
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True)
    subprocess.run([*pip, "msgpack"], check=True)
    return venv


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
@pytest.mark.anyio
async def test_image_command_runs_a_call(
    dockerfile: Path, fresh_venv: Path, tmp_path: Path
) -> None:
    command = image_command(dockerfile)
    assert command == ["python", "-m", "flyjobs.worker"]
    app = tmp_path / "app"  # the image's WORKDIR, holding the user's project
    (app / "scripts").mkdir(parents=True)
    (app / "scripts" / "jobs.py").write_text(
        "import flyjobs\n\n@flyjobs.remote\ndef triple(x):\n    return 3 * x\n"
    )
    root = tmp_path / "machine"
    payload_path = root / PAYLOAD_GUEST_PATH.lstrip("/")
    payload_path.parent.mkdir(parents=True)
    async with ResultInbox() as inbox:
        with inbox.expect("image-call", ttl_s=60) as ticket:
            payload_path.write_bytes(
                encode_call(
                    "jobs:triple",
                    (14,),
                    call_id="image-call",
                    deadline=time.time() + 60,
                    result_url=ticket.url,
                    # As the client sends a script's folder: its path on the client's host
                    # (absent here), then relative to the project root (the image's WORKDIR).
                    sys_path=["/home/someone/project/scripts", "scripts"],
                )
            )
            env = {
                "PATH": f"{fresh_venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
                MACHINE_ROOT_ENV: str(root),
            }
            done = await anyio.run_process(command, cwd=app, env=env, check=False)
            assert done.returncode == 0, done.stderr.decode()
            result = decode_result(await ticket.result())
    assert result.ok and result.value(pickle=False) == 42

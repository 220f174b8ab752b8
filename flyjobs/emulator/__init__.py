"""A local emulator of the Fly.io Machines REST API, running each machine as a local process.

Start it with `serve` (in the current event loop), `serve_in_thread`, or ``flyjobs dev``,
then point a client at `RunningEmulator.url` with `RunningEmulator.token`. Runs on Linux and
macOS: machine exits are watched through ``pidfd_open`` where the OS has it (Linux), else by a
waiting thread per machine.

The one documented deviation from Fly: a machine has no private filesystem, so its
``config.files`` are written under a per-machine root folder whose path is given to the
process in ``FLYJOBS_MACHINE_ROOT`` (`flyjobs._wire.machine.MACHINE_ROOT_ENV`). Its output is
read by the emulator from a pipe, kept in memory, and served in the shape of Fly's logs API at
``/api/v1/apps/{app}/logs``.

With ``time_scale`` (``flyjobs dev --time-scale``) other than 1, schedules run that many times
as fast, and machines get the scale and the emulator's start time in ``FLYJOBS_TIME_SCALE`` and
``FLYJOBS_TIME_ORIGIN`` so that a scheduled worker's clock keeps pace (Fly sets neither).
"""

from __future__ import annotations

from ._cli import dev as dev_command
from ._config import EmulatorConfig
from ._server import RunningEmulator, serve, serve_in_thread

__all__ = ("EmulatorConfig", "RunningEmulator", "dev_command", "serve", "serve_in_thread")

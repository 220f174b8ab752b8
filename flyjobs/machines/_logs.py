"""App logs. Fly serves them from its platform API (``api.fly.io``), not from the Machines API;
the local emulator serves the same path itself. See `ClientCore.logs_url`."""

from __future__ import annotations

from ._core import ClientCore, app_path, params
from ._http import Call, parse_model
from ._response_models import LogsPage

__all__ = ("LogsAPI",)


class LogsAPI(ClientCore):
    """Reading what machines printed."""

    async def get_logs(
        self,
        app: str,
        *,
        machine_id: str | None = None,
        region: str | None = None,
        next_token: str | None = None,
    ) -> LogsPage:
        """One page of the app's logs, optionally of one machine or region only.

        Without ``next_token`` the page holds the latest lines; with the ``next_token`` of a
        page, the lines that came after it.
        """
        query = params(instance=machine_id, region=region, next_token=next_token)
        path = f"/api{app_path(app)}/logs"
        call = Call("GET", path, "get_logs", app, safe=True, params=query, base_url=self.logs_url)
        return await self._requester.call(call, parse_model(LogsPage))

    async def log_tail(self, app: str, machine_id: str, *, lines: int = 20) -> str:
        """The machine's last ``lines`` log lines (destroyed machines too, while retained),
        joined with newlines."""
        page = await self.get_logs(app, machine_id=machine_id)
        messages = [entry.message for entry in page.entries if entry.instance in (None, machine_id)]
        return "\n".join(messages[-lines:]) if lines > 0 else ""

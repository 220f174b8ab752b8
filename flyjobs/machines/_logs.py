"""App logs. Fly serves them from its platform API (``api.fly.io``), not from the Machines API;
the local emulator serves the same path itself. See `ClientCore.logs_url`."""

from __future__ import annotations

import collections

from ._core import ClientCore, app_path, params
from ._http import ApiRequest, parse_model
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

        Without ``next_token`` the page starts at the oldest line the service still holds (Fly
        keeps a recent window); with the ``next_token`` of a page, the lines that came after it.
        An empty page means nothing newer has been logged yet.
        """
        query = params(instance=machine_id, region=region, next_token=next_token)
        path = f"/api{app_path(app)}/logs"
        call = ApiRequest(
            "GET", path, "get_logs", app, safe=True, params=query, base_url=self.logs_url
        )
        return await self._requester.call(call, parse_model(LogsPage))

    async def log_tail(
        self, app: str, machine_id: str, *, lines: int = 20, max_pages: int = 20
    ) -> str:
        """The machine's last ``lines`` log lines (destroyed machines too, while retained),
        joined with newlines. Reads at most ``max_pages`` pages."""
        if lines <= 0:
            return ""
        kept: collections.deque[str] = collections.deque(maxlen=lines)
        token: str | None = None
        for _ in range(max_pages):
            page = await self.get_logs(app, machine_id=machine_id, next_token=token)
            kept.extend(e.message for e in page.entries if e.instance in (None, machine_id))
            if not page.entries or not page.next_token:
                break
            token = page.next_token
        return "\n".join(kept)

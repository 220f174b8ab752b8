"""A warning, once per process, when a blocking face (``fn.remote()``, ``call.result()``,
iterating ``fn.map(...)``) is used inside a running event loop.

It blocks the loop's thread until the call ends, so nothing else on that loop runs meanwhile: an
``async def`` web handler calling ``fn.remote()`` serialises the whole app. Notebooks are left
alone: a Jupyter kernel runs its cells inside its own event loop, and blocking a cell is what a
notebook user means.
"""

from __future__ import annotations

import warnings

from .notebook import in_notebook

__all__ = ("warn_if_in_event_loop",)

_warned = False


def warn_if_in_event_loop(face: str, instead: str) -> None:
    """Issue a `RuntimeWarning` (once per process) when the calling thread runs an event loop.

    :param face: the blocking face the caller used, as the message names it.
    :param instead: the async face to use instead.
    """
    global _warned
    if _warned or not _in_event_loop() or in_notebook():
        return
    _warned = True
    warnings.warn(
        f"flyjobs: {face} blocks this thread's running event loop until the call ends, so"
        " nothing else on the loop runs meanwhile (an async web app then serves one request at"
        f" a time); from async code use {instead}",
        RuntimeWarning,
        stacklevel=3,  # the caller of the blocking face
    )


def _in_event_loop() -> bool:
    import sniffio  # lazy: keeps decoration light

    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return False
    return True

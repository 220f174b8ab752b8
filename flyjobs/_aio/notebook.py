"""Whether this process is a Jupyter kernel (a notebook, JupyterLab, Colab): its cells run
inside the kernel's event loop, and its output is a display, not a terminal."""

from __future__ import annotations

import sys

__all__ = ("in_notebook",)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ``ZMQInteractiveShell``, or Colab's shell);
    False in a terminal IPython or plain Python."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell" or "google.colab" in str(type(shell))

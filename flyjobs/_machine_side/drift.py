"""Dependency drift: the distributions the caller's shipped code imports, against the image's.

The image's Dockerfile records its installed distributions when it is built
(``python -m flyjobs._machine_side.drift``, a JSON map of name to version at
`IMAGE_DISTRIBUTIONS_PATH`). A call's bundle names the distributions its modules import with
the caller's versions (`flyjobs._code.collect`); on the machine, a shipped module that fails to
import one the image lacks gets an error naming it and the image, and a version that differs
gets one line on the call's stderr per machine (``numpy 2.1.3 here, 1.26.4 in IMAGE; rebuild
the image``).

Standard library only; ``json`` and ``importlib.metadata`` are imported on the paths that
need them.
"""

from __future__ import annotations

import os
import sys

__all__ = ("IMAGE_DISTRIBUTIONS_PATH", "drift_lines", "explain_missing", "main")

#: Where the image records its installed distributions (written at build time).
IMAGE_DISTRIBUTIONS_PATH = "/usr/local/share/flyjobs/distributions.json"
#: Overrides `IMAGE_DISTRIBUTIONS_PATH` (an image built another way, or a test).
IMAGE_DISTRIBUTIONS_ENV = "FLYJOBS_IMAGE_DISTRIBUTIONS"


def _image() -> str:
    return os.environ.get("FLY_IMAGE_REF") or "the image"


def image_distributions() -> dict[str, str] | None:
    """The image's distributions (lowercase name -> version) as its build recorded them, or
    None where none were recorded (an image built otherwise, a local machine)."""
    path = os.environ.get(IMAGE_DISTRIBUTIONS_ENV) or IMAGE_DISTRIBUTIONS_PATH
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return None
    import json  # lazy: only a bundle naming distributions reads the record

    try:
        recorded = json.loads(data)
    except ValueError:
        return None
    if not isinstance(recorded, dict):
        return None
    return {str(name).lower(): str(version) for name, version in recorded.items()}


def drift_lines(requires: list[list[str]]) -> list[str]:
    """One line per distribution whose caller's version differs from the image's record."""
    recorded = image_distributions()
    if recorded is None:
        return []
    lines = []
    for _module, dist, version in requires:
        there = recorded.get(dist.lower())
        if there is not None and there != version:
            lines.append(f"{dist} {version} here, {there} in {_image()}; rebuild the image")
    return lines


def explain_missing(exc: BaseException, requires: list[list[str]]) -> BaseException:
    """``exc`` (an import failure of shipped code) with the distribution it names, when the
    caller has one for the missing module and the image has not: the error says which and in
    which image. Other errors are returned as they are."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ImportError) or not name:
        return exc
    top = name.partition(".")[0]
    for module, dist, version in requires:
        if module == top:
            explained = ModuleNotFoundError(
                f"{exc}: the caller's code imports {dist} ({version} here), which is not"
                f" installed in {_image()}; add it to the image's dependencies and rebuild the"
                " image",
                name=name,
            )
            explained.__cause__ = exc
            return explained
    return exc


def main() -> None:
    """Write the installed distributions (name -> version, JSON) to the path given (default
    `IMAGE_DISTRIBUTIONS_PATH`): the Dockerfile runs this at build time."""
    import importlib.metadata  # lazy: keeps machines light (this runs at image build only)
    import json  # lazy: as above

    path = sys.argv[1] if len(sys.argv) > 1 else IMAGE_DISTRIBUTIONS_PATH
    found = {
        dist.metadata["Name"]: dist.version
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(dict(sorted(found.items())), file, indent=0)


if __name__ == "__main__":
    main()

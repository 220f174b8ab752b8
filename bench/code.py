"""Code sync: building a call's bundle, and what shipping it adds to a ``.remote()``.

- ``build``: a generated project of 200 modules (10 packages of 20, each importing the next
  package) is bundled from its function's module: cold (the process's cache cleared: every
  file read, parsed for imports and zipped; goal <= 0.1 s) and cached (every file's mtime
  checked; goal <= 5 ms). Medians.
- ``remote``: a trivial ``noop.remote(i)`` on the embedded emulator with code sync (its module
  ships inline in the machine config, checked and unpacked by the worker) against the same
  call with ``code="image"``, alternating; goal ``remote_sync_vs_image_ratio`` <= 1.10.

    python bench/code.py [--runs 20]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# The "image" of code="image": local machines see bench/ as an image would hold the code.
os.environ["PYTHONPATH"] = str(HERE)

from _common import bare_config  # noqa: E402, F401  (sets up the environment first)
from _trivial import noop  # noqa: E402

from flyjobs._calls.runtime import shutdown_runtime  # noqa: E402
from flyjobs._code.bundle import bundle_for, clear_cache  # noqa: E402

COLD_GOAL_S = 0.1
CACHED_GOAL_S = 0.005
PACKAGES = 10
MODULES_PER_PACKAGE = 20


def make_project(folder: Path) -> str:
    """Write the 200-module project; return its function's reference."""
    (folder / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    for p in range(PACKAGES):
        package = folder / f"benchpkg{p}"
        package.mkdir()
        (package / "__init__.py").write_text("")
        after = f"import benchpkg{p + 1}.m0\n" if p + 1 < PACKAGES else ""
        for m in range(MODULES_PER_PACKAGE):
            body = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(20))
            (package / f"m{m}.py").write_text(f"import os\nimport json\n{after}\n{body}")
    return "benchpkg0.m0:f0"


def bench_build(runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        ref = make_project(Path(folder))
        sys.path.insert(0, folder)
        importlib.import_module(ref.partition(":")[0])
        cold, cached = [], []
        bundle = None
        for _ in range(runs):
            clear_cache()
            started = time.perf_counter()
            bundle = bundle_for(ref)
            cold.append(time.perf_counter() - started)
        for _ in range(runs * 5):
            started = time.perf_counter()
            bundle_for(ref)
            cached.append(time.perf_counter() - started)
        assert bundle is not None
        modules = sum(source.name.endswith(".py") for source in bundle.sources)
        cold_s, cached_s = statistics.median(cold), statistics.median(cached)
        return {
            "modules": modules,
            "bundle_bytes": len(bundle.data),
            "build_cold_ms": round(cold_s * 1000, 2),
            "build_cached_ms": round(cached_s * 1000, 3),
            "build_cold_vs_goal_ratio": round(cold_s / COLD_GOAL_S, 3),
            "build_cached_vs_goal_ratio": round(cached_s / CACHED_GOAL_S, 3),
        }


def bench_remote(runs: int) -> dict[str, float]:
    image = noop.with_options(code="image")
    samples: dict[str, list[float]] = {"sync": [], "image": []}
    for i in range(3):  # warm-up: connections, bytecode and page caches
        noop.remote(i)
        image.remote(i)
    for i in range(runs):
        for name, fn in (("sync", noop), ("image", image))[:: 1 if i % 2 else -1]:
            started = time.perf_counter()
            fn.remote(i)
            samples[name].append(time.perf_counter() - started)
    shutdown_runtime()
    sync_ms = statistics.median(samples["sync"]) * 1000
    image_ms = statistics.median(samples["image"]) * 1000
    return {
        "remote_sync_ms": round(sync_ms, 2),
        "remote_image_ms": round(image_ms, 2),
        "remote_sync_vs_image_ratio": round(sync_ms / image_ms, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    result = {**bench_build(runs), **bench_remote(runs * 2), "runs": runs}
    print(
        f"bundle of {result['modules']} modules: cold {result['build_cold_ms']} ms,"
        f" cached {result['build_cached_ms']} ms; .remote() {result['remote_sync_ms']} ms with"
        f" code sync, {result['remote_image_ms']} ms with code='image'"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

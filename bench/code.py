"""Code sync: building a call's bundle, and what shipping it adds to a ``.remote()``.

- ``build``: a generated project of 200 modules (10 packages of 20, each importing the next
  package) is bundled from its function's module: cold (the process's cache cleared: every
  file read, parsed for imports and zipped; goal <= 0.1 s) and cached (every file's mtime
  checked; goal <= 5 ms). Medians.

    python bench/code.py [--runs 20]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from flyjobs._code.bundle import bundle_for, clear_cache

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    result = {**bench_build(runs), "runs": runs}
    print(
        f"bundle of {result['modules']} modules: cold {result['build_cold_ms']} ms,"
        f" cached {result['build_cached_ms']} ms"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

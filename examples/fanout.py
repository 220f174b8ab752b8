"""Fan-out: one machine per input, at most `max_machines` (FLYJOBS_MAX_MACHINES) at once.

python examples/fanout.py
"""

import flyjobs


@flyjobs.remote(memory_mb=256, timeout_s=60)
def word_length(word: str) -> int:
    if not word:
        raise ValueError("empty word")
    return len(word)


if __name__ == "__main__":
    words = ["fly", "machines", "run", "python", "functions"]
    print("lengths:", list(word_length.map(words)))
    # Failures come back in place of values instead of ending the loop:
    checked = ["ok", ""]
    results = word_length.map(checked, return_exceptions=True)
    for word, result in zip(checked, results, strict=True):
        print(f"{word!r}: {result!r}")

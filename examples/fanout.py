"""A batch job: score a few thousand documents on a pool of machines, with progress.

`fn.map` creates up to `max_machines` ephemeral machines (at the API's create rate); each takes
its next input as it finishes one, and exits when the batch has no more work for it. The input
is a generator, read lazily: the documents are never all in memory here. Failures come back in
place of values (`return_exceptions=True`), and the batch stops if too many inputs fail
(`max_failures`), destroying every machine it made. Ctrl-C does the same.

    python examples/fanout.py [--documents 2000] [--max-machines 16]
"""

from __future__ import annotations

import argparse
import hashlib
import random
from collections.abc import Iterator

import flyjobs


class MalformedDocumentError(ValueError):
    """A document the scorer cannot read."""


@flyjobs.remote(memory_mb=256, timeout_s=60, retries=1, retry_on=(ConnectionError,))
def score(doc_id: int, text: str) -> dict[str, int | str]:
    """Score one document (a stand-in for real work: parsing, a model, an API call)."""
    if not text.strip():
        raise MalformedDocumentError(f"document {doc_id} is empty")
    words = text.split()
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return {"id": doc_id, "words": len(words), "longest": max(words, key=len), "digest": digest}


def documents(count: int, seed: int = 7) -> Iterator[tuple[int, str]]:
    """The documents, made one at a time (as from a file or a database cursor)."""
    rng = random.Random(seed)
    vocabulary = "fly machines run python functions batch inbox result worker".split()
    for doc_id in range(count):
        # About one document in two hundred is empty: those fail, in place.
        length = 0 if rng.random() < 0.005 else rng.randint(5, 50)
        yield doc_id, " ".join(rng.choice(vocabulary) for _ in range(length))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--max-machines", type=int, default=16)
    args = parser.parse_args()

    words = 0
    failed: list[int] = []
    results = score.starmap(
        documents(args.documents),
        max_machines=args.max_machines,
        return_exceptions=True,
        max_failures=max(10, args.documents // 50),  # more than 2% failing: stop
        progress=True,
    )
    with results:
        for doc_id, result in enumerate(results):
            if isinstance(result, Exception):
                failed.append(doc_id)
            else:
                words += int(result["words"])
    print(f"{args.documents - len(failed)} documents scored, {words} words in all")
    print(f"failed (empty): {failed}")
    print(results.summary())


if __name__ == "__main__":
    main()

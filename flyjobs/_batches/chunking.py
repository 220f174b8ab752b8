"""How many inputs a batch machine takes per round trip: the adaptive chunk.

A machine that pulls its work (the inbox) is handed its next inputs in the answer to its result
delivery (`flyjobs._wire.bulk`). One input per round trip wastes most of the round trip on small,
fast inputs; many inputs per round trip make fast inputs wait behind a slow one. `ChunkSize`
learns from each round trip: it doubles the chunk while the round trip's overhead (all of it
but the time the functions ran) is more than the functions' time, up to `MAX_CHUNK` inputs and a
chunk that should run about `TARGET_RUN_S`; it halves it when a chunk ran longer than that; and
it drops back to one input when a machine gave inputs back because one ran long
(`flyjobs._wire.bulk.CHUNK_HOLD_S`). A chunk never holds more than `MAX_CHUNK_BYTES` of encoded
arguments (one input larger than that still goes, alone).

A machine whose results go through the object store reads its next chunk from there instead
(`flyjobs._batches.batch`): `store_share` says how many of the inputs left it may take.

May import: nothing of flyjobs (the batch applies it).
"""

from __future__ import annotations

import math

__all__ = (
    "INPUT_COST_S",
    "MAX_CHUNK",
    "MAX_CHUNK_BYTES",
    "STORE_ROUND_TRIP_S",
    "TARGET_RUN_S",
    "ChunkSize",
    "store_share",
)

#: Most inputs in one chunk.
MAX_CHUNK = 64
#: Most bytes of encoded arguments in one chunk.
MAX_CHUNK_BYTES = 1024 * 1024
#: Seconds a chunk's functions should run in all, at most: a chunk grows no further than that
#: (at the inputs' mean run time), and shrinks when one ran longer.
TARGET_RUN_S = 0.05
#: Seconds a store-mode machine's next chunk's round trip takes about (a look at the results in
#: the store, a write, the machine's read): the inputs left are not split into shares that run
#: quicker than that (a few quick ones left go to the next machine that asks, in one chunk,
#: rather than in ever smaller ones to every machine).
STORE_ROUND_TRIP_S = 0.25
#: Seconds an input costs its machine at least, whatever its function's run time (decoding,
#: sealing and delivering it: a fraction of this, measured on a shared CPU).
INPUT_COST_S = 0.001


def store_share(run_s: float | None, *, undone: int, unheld: int, held: int, machines: int) -> int:
    """How many more inputs a store-mode machine may take in its next chunk: an even share,
    among ``machines``, of the ``undone`` inputs (not done nor failed), less the ``held`` ones
    it holds not run yet (0 or less: it holds its share); or all ``unheld`` ones (no machine
    holds them) when those left after that share would run within `STORE_ROUND_TRIP_S`, by
    ``run_s``, the inputs' mean run time (at least `INPUT_COST_S`; None: not known yet).

    Shares are of what is not done, not only of what no machine holds: else the machine that
    asks first takes a share of those and comes back for more, while the last gets little.
    """
    share = math.ceil(max(undone, 1) / machines) - held
    if run_s is not None and unheld - share < STORE_ROUND_TRIP_S / max(run_s, INPUT_COST_S):
        return unheld  # the few left go with it, not in a round trip of their own
    return share


class ChunkSize:
    """The batch's chunk size, learnt from its round trips (see the module docstring).

    :ivar size: inputs to hand a machine in its next round trip (1 at first).
    """

    def __init__(self, *, max_size: int = MAX_CHUNK, target_run_s: float = TARGET_RUN_S) -> None:
        self.size = 1
        self._max = max_size
        self._target_s = target_run_s

    def observe(self, count: int, run_s: float, round_trip_s: float, *, returned: bool) -> None:
        """A chunk of ``count`` inputs came back: its functions ran ``run_s`` seconds in all,
        ``round_trip_s`` passed from handing it out to its last result; ``returned``: the
        machine gave some of its inputs back (one of them ran long)."""
        if returned:
            self.size = 1
            return
        if run_s > self._target_s:
            self.size = max(1, self.size // 2)
            return
        per_input_s = run_s / max(count, 1)
        overhead_s = round_trip_s - run_s
        grown = min(self._max, self.size * 2)
        if overhead_s > run_s and count >= self.size and grown * per_input_s <= self._target_s:
            self.size = grown

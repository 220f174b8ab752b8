"""What machines cost: Fly's prices and the ledger of what a batch or pool spent.

Owns: `prices` (the dated price table shipped in ``prices.toml``, or the user's own, and the
price of a guest in a region), `ledger` (billed machine-seconds from a machine's start and exit
events, split among the inputs it served, busy vs idle), `budget` (``max_cost_usd``: what is
committed, running and projected, checked before a machine starts or takes more work).

May import: `flyjobs._exceptions`, `flyjobs._settings`, `flyjobs.machines` (the response
models it reads events from). Never `_calls`, `_batches`, `_pools` or `_commands`, which import
it.
"""

"""Pools: warm machines whose slots run single calls (``pool=``).

Owns: `runner` (a pool's machines: start, place calls in free slots, hand each slot its next
call, keep-warm, idle exit, drain), `state` (what the runner tracks: calls, machines, slots).

May import: `flyjobs._calls` (runtime, plan, handle, the attempt lifecycle; not `dispatch`,
which routes pooled calls here), `_results`, `_wire`, `_exceptions`; `flyjobs._declare.pool`
only for type checking. Never `_batches` or `_commands`.
"""

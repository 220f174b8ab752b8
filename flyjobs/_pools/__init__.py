"""Pools: warm machines whose slots run single calls (``pool=``).

Owns: `runner` (a pool's machines: start, place calls in free slots, hand each slot its next
call, keep-warm, idle exit or suspend and resume, drain), `state` (what the runner tracks:
calls, machines, slots).

May import: `flyjobs._calls` (runtime, plan, handle, the attempt lifecycle), `_standby`
(claims on standby machines), `_results`,
`_wire`, `_cost`, `_exceptions`; `flyjobs._declare.pool` only for type checking. Never
`flyjobs._calls.dispatch` (which routes pooled calls here), `_batches` or `_commands`.
"""

"""Calls: one remote call from the caller's side, and the machine attempt every caller shares.

Owns: `runtime` (the process-wide runtime: its event loop thread, the Machines client, the
result channel, the embedded emulator), `plan` (what every call of a function needs, fixed
before any machine exists), `machine_config` (the one config of every machine flyjobs
creates: calls, batches, pools, schedules), `attempt` (one machine attempt: create, watch,
collect the result or explain the exit, destroy; retries), `dispatch` (``fn.remote``,
``fn.spawn``: a call on its own machine, or routed to its pool), `detach` (``spawn_detached``
and ``Call.from_id``), `handle` (the public `Call`), `fleet` (flyjobs' machines as their
metadata describes them: listing, strays).

May import: `flyjobs._wire`, `_declare`, `_results`, `_output`, `_aio`, `_code` (the bundle a
plan ships), `_pools` (dispatch routes a pooled call there), `_cost` (a machine's cost),
`_trace` (a call's span),
`_settings`, `_exceptions`, `flyjobs.machines`,
`flyjobs._machine_side.run` (how much output a result carries), and `flyjobs.emulator`
(lazily: only a process without a Fly token starts one). Never `_batches` or `_commands`.
"""

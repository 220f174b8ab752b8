"""Scheduled functions seen from the caller: deploy, status, run now, remove.

Owns: `deploy` (one sealed machine per scheduled function, created or updated in place under
its lease), `status` (what the runs did, read from the machines' logs; ``schedule run``;
removing one), `health` (late and missed ticks, consecutive failures: ``schedule ls`` and
``schedule check``). The runs themselves are `flyjobs._machine_side.scheduled_run`'s.

May import: `flyjobs._calls` (plan, machine config, runtime, dispatch for ``schedule run``),
`_declare` (its cron ticks tell the next run due), `_code` (a deployed bundle), `_cost` (what
runs cost), `_output`, `_wire`, `_exceptions`, `flyjobs.machines`.
"""

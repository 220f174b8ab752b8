"""Standby machines: stopped machines made ahead of time, so that a batch reaches its full width
at once instead of at Fly's create rate (about one a second per app).

Owns: `fleet` (making, listing and removing standbys), `claim` (a batch's or pool's claim on
them under their lease, giving them back, and recovering those whose caller died, run by
``flyjobs gc``). A claimed standby runs as a `flyjobs._calls.attempt.MachineRun`.

May import: `flyjobs._calls` (the machine config; `attempt` runs a claim), `_declare`,
`_wire`, `_exceptions`, `flyjobs.machines`. Never `_batches`, `_pools` or `_commands`.
"""

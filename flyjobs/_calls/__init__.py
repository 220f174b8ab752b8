"""Calls: the runtime, plans, the one attempt lifecycle of a machine, detached calls,
the `Call` handle, flyjobs' machines as their metadata describes them.

May import: `flyjobs._wire`, `_declare`, `_results`, `_output`, `_aio`, `flyjobs.machines`.
"""

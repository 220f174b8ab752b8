"""Scheduled functions seen from the caller: deploy, status, run now, remove.

May import: `flyjobs._calls` (machine config, attempt), `_wire`, `_declare`, `machines`.
"""

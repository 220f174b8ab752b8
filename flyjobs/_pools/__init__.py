"""Pools: warm machines whose slots run single calls.

May import: `flyjobs._calls` (the attempt lifecycle), `_results`, `_wire`, `_declare`.
"""

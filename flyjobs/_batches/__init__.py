"""Batches: `fn.map` over machines that pull inputs, journals, progress.

May import: `flyjobs._calls` (the attempt lifecycle), `_results`, `_wire`, `_declare`.
"""

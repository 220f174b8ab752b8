"""Batches: ``fn.map`` over machines that pull their inputs.

Owns: `map` (the public face: `MapResults`, closing, Ctrl-C), `batch` (the batch's machines:
created at the create rate, each handed its next input with the answer to its result),
`work` (where inputs come from and outcomes go: `WorkSource`, `Outcome`, the `Recorder`
protocol), `journal` (a resumable batch's journal, in the store or SQLite), `resume` (how a map
records through its journal), `progress` (counts, `Summary`, the progress display),
`chunking` (how many inputs a machine takes per round trip: the adaptive chunk, a store-mode
machine's share), `result_polls` (when a store-mode batch looks for its results next), `width`
(how many machines a batch runs: another only while it would still find work once booted).

May import: `flyjobs._calls` (runtime, plan, the attempt lifecycle), `_standby` (claims on
standby machines), `_results`, `_wire`,
`_declare`, `_aio`, `_cost`, `_settings`, `_exceptions`,
`_trace` (a map's span). Never `_pools` or `_commands`.
"""

"""The wire format: everything that crosses between a caller and a machine.

Owns: `codec` (values, with msgpack extension types, and class references), `framing` (what
every envelope shares: version, fields, pickle), `call_envelope` (a call as it travels to a
machine), `chunk` (a store-mode batch machine's next chunk of calls),
`result_envelope` (its value or exception as it travels back), `remote_errors`
(exceptions captured on a machine and rebuilt here), `reference` (a function's
``module:qualname``), and the rules both sides read: `machine` (what a flyjobs machine is: the
worker command, the payload's path, reserved environment names, waits, exit codes), `seal` (the
result key's seal on results and records), `log_lines` (call marks, error lines, run records:
the lines a machine writes that readers parse), `metadata` (the keys on flyjobs' machines),
`bulk` (several inputs per round trip: a chunk of calls out, a bulk of results back).

May import: the standard library, msgpack, `flyjobs._exceptions`; nothing else of flyjobs. Every
machine imports it, so what else a value needs (``decimal``, ``zoneinfo``, pickle) is imported
where it is needed.
"""

"""The wire format: everything that crosses between a caller and a machine.

Owns: `codec` (values, with msgpack extension types, and class references), `framing` (what
every envelope shares: version, fields, pickle), `call_envelope` (a call as it travels to a
machine), `result_envelope` (its value or exception as it travels back), `remote_errors`
(exceptions captured on a machine and rebuilt here), `reference` (a function's
``module:qualname``), `protocol` (the rules both sides read: exit codes, paths, environment
names, the result seal, call marks, metadata keys, the worker command).

May import: the standard library, msgpack, `flyjobs._exceptions`; nothing else of flyjobs. Every
machine imports it, so what else a value needs (``decimal``, ``zoneinfo``, pickle) is imported
where it is needed.
"""

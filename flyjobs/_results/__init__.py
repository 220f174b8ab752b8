"""How a call's result comes back: the channel, behind one protocol.

Owns: `channel` (the result-channel protocol and the choice of inbox or store), `inbox` (the
signed HTTP inbox this process serves), `store` (the object store: presigned results,
spilled arguments, detached calls' records), `chunks` (a store-mode batch machine's
chunk objects), `s3_list` (listing keys obstore refuses),
`local_api` (the result key of a Machines API on this host).

May import: `flyjobs._wire`, `flyjobs._aio`, `flyjobs._settings`, `flyjobs._exceptions`,
`flyjobs.machines` (`local_api` reads an app's secret), `flyjobs._output.call_lines` (how a key
is shown). Nothing outside this package checks which channel it has (no ``isinstance``, no
``channel.mode``).
"""

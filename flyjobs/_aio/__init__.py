"""Async plumbing shared by the runtime and the emulator.

Owns: `event_loop` (a loop on a daemon thread that may be closed at interpreter exit),
`bridge` (awaiting work of the runtime's loop from another loop), `blocking` (the warning for
a blocking face used inside a running loop), `notebook` (whether this is a Jupyter kernel),
`sole_error` (no exception group escapes a public call), `http_server` (the bounded h11
server of the result inbox and the emulator), `quiet_logs` (flyjobs' servers and HTTP client
stay out of the host's logs).

May import: the standard library, anyio, h11, sniffio, `flyjobs._exceptions`; nothing else of
flyjobs (the emulator imports it too).
"""

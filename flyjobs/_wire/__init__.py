"""The wire format: call and result envelopes, the value codec, remote errors, and the
protocol rules that cross the caller and the machine.

May import: the standard library, msgpack, `flyjobs._exceptions`. Machines import it.
"""

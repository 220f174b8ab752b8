"""What runs inside a machine besides `flyjobs.worker`: what a worker's calls
share, scheduled runs, and the emulator's fork server.

May import: the standard library, msgpack, `flyjobs._wire`, `flyjobs._exceptions`.
"""

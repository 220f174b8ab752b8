"""Async plumbing shared by the runtime and the emulator: loops on daemon threads,
awaiting across loops, the blocking-face warning, exception groups, the bounded HTTP server,
quiet logs.

May import: the standard library, anyio, h11, uvicorn, `flyjobs._exceptions`; nothing else.
"""

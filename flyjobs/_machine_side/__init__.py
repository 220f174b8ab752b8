"""What runs inside a machine besides `flyjobs.worker`, its entry (``python -m flyjobs.worker``).

Owns: `shared` (what calls running at once in one worker process share: output tails,
deadlines, the event loop of async functions), `scheduled_run` (a scheduled function's runs,
each recorded as a line of the machine's log), `zygote` (the fork server the local emulator
starts worker machines from).

May import: the standard library, msgpack, `flyjobs._wire`, `flyjobs._exceptions` and
`flyjobs.worker`; `zygote` also preloads `flyjobs._declare.function`, which every user module
imports. Never anyio, httpx, pydantic or typing_extensions (tests guard the worker's imports).
"""

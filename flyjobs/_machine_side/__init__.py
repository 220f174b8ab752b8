"""What runs inside a machine besides `flyjobs.worker`, its entry (``python -m flyjobs.worker``).

Owns: `shared` (what calls running at once in one worker process share: output tails,
deadlines, the event loop of async functions), `run` (one call of the user's function: import
it, call it, trim the machine's frames from what it raised; for the worker and scheduled runs),
`scheduled_run` (a scheduled function's runs, each recorded as a line of the machine's log),
`alerts` (its signed alert POSTs on a failed or missed run), `bundles` (a store-mode batch
machine's results, delivered a few at a time),
`trace_context` (the caller's trace context for the function's own spans),
`code` (the caller's code bundle of a call: its seal and hash checked, unpacked once, first
on ``sys.path``), `drift` (the image's recorded distributions against those the shipped code
imports: errors and warnings that name them), `zygote` (the fork server the local emulator
starts worker machines from), `forking` (what the emulator and its fork server agree on; the
emulator imports it, not the zygote).

May import: the standard library, msgpack, `flyjobs._wire`, `flyjobs._exceptions`,
`flyjobs._declare.schedule` (a cron resident's ticks; standard library only) and
`flyjobs.worker`; `zygote` also preloads `flyjobs._declare.function`, which every user module
imports. Never anyio, httpx, pydantic or typing_extensions (tests guard the worker's imports).
"""

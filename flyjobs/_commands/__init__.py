"""The ``flyjobs`` commands, each a thin face over the library; `flyjobs.cli` registers them.

Owns: `run`, `listing` (``ls``, ``logs``), `strays` (``gc``), `doctor` with its `checks`,
`batch`, `schedule`, `code` (what ships with calls), `standby` (``standby create|ls|rm``); `target`
(``FILE_OR_MODULE::FUNCTION`` and its arguments), `common` (the API a command talks to, errors
shown without a traceback).

May import: any package of flyjobs (the commands are its outermost layer); only `flyjobs.cli`
imports them.
"""

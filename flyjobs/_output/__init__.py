"""What calls print: live lines, lines read back through the logs API, call marks.

Owns: `live` (lines reach this process's stdout while calls run), `logs` (``flyjobs logs``:
what a call or batch printed, read back later), `call_lines` (which call printed each line of
a machine that ran many, and how a line is shown safely).

May import: `flyjobs._wire`, `flyjobs._exceptions`, `flyjobs.machines`,
`flyjobs._calls.fleet` (machines by their metadata). Never the rest of `flyjobs._calls`.
"""

"""What calls print: live lines, lines read back through the logs API, call marks.

May import: `flyjobs._wire`, `flyjobs.machines`.
"""

"""The caller's code as it travels with calls: the bundle.

Owns: `collect` (which of the caller's files a function needs: its top-level package or
module and the project's own modules it imports), `bundle` (the deterministic zip of them,
named by its sha256, built once per process per content), `delivery` (how a bundle reaches a
machine), `main_source` (a notebook's function made a module by its source). The machine's
side, checking and unpacking a bundle, is `flyjobs._machine_side.code`.

May import: the standard library, ``pathspec``, `flyjobs._exceptions`, `flyjobs._wire`; never
the calls, batches or pools that ship bundles.
"""

"""The declaration layer: `@remote`, its options, `Pool` and `Cron` as declared.

May import: the standard library, `flyjobs._wire`, `flyjobs._exceptions`, `flyjobs._typing`;
everything else lazily (a decorated module must load no anyio, httpx, pydantic).
"""

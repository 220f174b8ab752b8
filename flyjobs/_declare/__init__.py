"""The declaration layer: what a user module runs when it decorates a function.

Owns: `function` (``@remote`` and the `Function` it makes: ``.remote``, ``.spawn``, ``.map``,
``.with_options``), `options` (the options, checked at decoration), `pool` (`Pool` as declared),
`schedule` (``schedule=`` intervals, `Cron` and its ticks), `output_choice` (the ``output=``
option).

May import: the standard library, `flyjobs._wire`, `flyjobs._exceptions`, `flyjobs._typing`,
`flyjobs._aio.blocking` (standard library only). Everything a call needs (`flyjobs._calls`,
`_batches`, `_pools`) only inside the function that makes the call: every machine imports the
user's module, so decorating loads no anyio, httpx, pydantic or typing_extensions.
"""

"""Planning calls: what every call of a function needs, fixed before any machine exists.

A `Plan` is made once per ``spawn`` or ``map`` (the function reference, its import roots, the
options with the settings' defaults, the app and image); each input is then encoded against it
(`Plan.encode`), and each machine gets its config and payload from it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._code.bundle import Bundle, bundle_for, bundle_of_source
from .._code.delivery import bundle_guest_path, inline
from .._code.main_source import interactive, main_module_source
from .._declare.options import CallOptions
from .._declare.output_choice import resolve_output
from .._exceptions import ConfigError, SerializationError
from .._wire.call_envelope import encode_arguments, encode_call
from .._wire.machine import NEXT_INPUT_WAIT_S, importing_function
from .._wire.metadata import (
    META_BATCH_ID,
    META_BATCH_SIZE,
    META_CALL_ID,
    META_CLIENT,
    META_DEADLINE,
    META_FUNCTION,
    META_POOL,
)
from .._wire.reference import function_reference
from .._wire.seal import seal_code
from ..machines import MachineConfig
from .fleet import client_identity
from .machine_config import Claimed, Ephemeral, machine_config, standby_metadata
from .runtime import current_settings, get_runtime

__all__ = (
    "MAX_INLINE_PAYLOAD_BYTES",
    "WORKER_DEADLINE_SLACK_S",
    "Plan",
    "check_arguments",
    "new_batch_id",
    "plan",
)

#: Largest encoded arguments sent inline in ``files[].raw_value`` (before base64, which adds a
#: third). Fly does not document a config size limit; 1 MiB keeps the create request
#: well-behaved. Larger arguments travel through the object store (``FLYJOBS_STORE``): the
#: payload then carries a presigned URL the worker GETs them from.
MAX_INLINE_PAYLOAD_BYTES = 1024 * 1024
#: Seconds the worker's own deadline is set after the client's, so the client decides first.
WORKER_DEADLINE_SLACK_S = 5.0
#: Seconds a code bundle's URL (inbox or presigned store GET) stays valid: a long batch's
#: last machines start well after its plan was made.
CODE_URL_TTL_S = 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything the calls of one ``spawn`` or ``map`` share."""

    fn_ref: str
    sys_path: Sequence[str]
    arg_names: Sequence[str]
    options: CallOptions
    batch_id: str | None
    app: str
    image: str
    #: the call outlives this process: its machine runs on and its result stays in the store
    detach: bool = False
    #: what the lines the calls print show here: live, errors or none
    #: (`flyjobs._declare.output_choice`)
    output: str = "live"
    #: the batch's number of inputs, when known: in its machines' metadata (for dashboards)
    batch_size: int | None = None
    #: the caller's code the calls import the function from (`flyjobs._code`); None: the
    #: image's code
    code: Bundle | None = dataclasses.field(default=None, repr=False)
    #: the key each call's bundle hash is sealed with (the result key)
    seal_key: str | None = dataclasses.field(default=None, repr=False)
    #: where machines GET the bundle when it is too large for the machine config (the inbox,
    #: or a presigned URL of the store); None: it travels inline
    code_url: str | None = dataclasses.field(default=None, repr=False)

    def encode(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], *, spill: bool) -> bytes:
        """The encoded arguments of one input.

        :param spill: arguments too large to travel inline may go through the object store.
        :raises SerializationError: an argument cannot be encoded, or the arguments are too
            large to travel inside a machine config (and ``spill`` is off).
        """
        arguments = encode_arguments(
            args, kwargs, pickle=self.options.pickle, arg_names=self.arg_names
        )
        if self.spilled(arguments) and not spill:
            raise SerializationError(
                f"the arguments of {self.fn_ref} encode to {len(arguments) / 1048576:.1f} MiB,"
                f" over the {MAX_INLINE_PAYLOAD_BYTES // 1048576} MiB"
                " (MAX_INLINE_PAYLOAD_BYTES) that travel inside the machine config; configure"
                " an object store (FLYJOBS_STORE, or BUCKET_NAME from `fly storage create`) to"
                " send larger ones through it, or pass large data by reference (a URL or"
                " object-store key)"
            )
        return arguments

    @staticmethod
    def spilled(arguments: bytes) -> bool:
        """Whether encoded arguments are too large to travel inline (they go through the
        object store)."""
        return len(arguments) > MAX_INLINE_PAYLOAD_BYTES

    def payload(
        self,
        call_id: str,
        arguments: bytes,
        *,
        deadline: float,
        result_url: str,
        arguments_url: str | None = None,
        pulls: bool = False,
        then: Sequence[bytes] = (),
        idle_s: float = NEXT_INPUT_WAIT_S,
        concurrent: Sequence[bytes] = (),
        traceparent: str | None = None,
        chunk_url: str | None = None,
    ) -> bytes:
        """The call envelope a worker reads; ``deadline`` is the client's (unix s), the worker
        gets a little more so that the client decides first. With ``arguments_url`` the worker
        GETs the arguments there instead (the payload carries their digest); ``then`` are the
        calls it runs after this one, ``concurrent`` those it runs at the same time,
        ``chunk_url`` where it reads its next chunk of calls after them, and
        ``traceparent`` the trace context of the call's span (see
        `flyjobs._wire.call_envelope`)."""
        return encode_call(
            self.fn_ref,
            call_id=call_id,
            deadline=deadline + WORKER_DEADLINE_SLACK_S,
            result_url=result_url,
            batch_id=self.batch_id,
            sys_path=self.sys_path,
            pickle=self.options.pickle,
            arguments=arguments,
            arguments_url=arguments_url,
            pulls=pulls,
            then=then,
            idle_s=idle_s,
            concurrent=concurrent,
            code=self.code_field(call_id),
            traceparent=traceparent,
            chunk_url=chunk_url,
        )

    def code_field(self, call_id: str) -> dict[str, Any] | None:
        """The envelope's ``code`` of call ``call_id`` (`flyjobs._wire.call_envelope`): the
        bundle's hash, sealed for the call, and the file of the machine config it is in."""
        if self.code is None:
            return None
        sha256 = self.code.sha256
        seal = seal_code(self.seal_key, sha256, call_id) if self.seal_key else ""
        field: dict[str, Any] = {"sha256": sha256, "seal": seal, "path": None, "url": None}
        if self.code_url is not None:
            field["url"] = self.code_url
        else:
            field["path"] = bundle_guest_path(self.code)
        if self.code.requires:
            field["requires"] = [list(each) for each in self.code.requires]
        return field

    def machine_config(
        self, name: str, payload: bytes, *, deadline: float | None, claimed: bool = False
    ) -> MachineConfig:
        """An ephemeral machine (``auto_destroy``, never restarted) whose first call is in
        ``files[].raw_value``; with ``claimed``, a standby machine's config for the call (it
        stops instead of being destroyed, and keeps its standby marks).

        :param deadline: the client's deadline (unix s) of the machine's only call, from which
            `flyjobs gc` tells a stray; None for a machine that takes more than one input (its
            worker's deadline moves with each input, and it ends itself when idle).
        """
        metadata = {
            META_CALL_ID: name,
            META_BATCH_ID: self.batch_id or "",
            META_FUNCTION: self.fn_ref,
            # A detached call outlives its client: `flyjobs gc` judges it by its deadline.
            META_CLIENT: "" if self.detach else client_identity(),
        }
        if self.options.pool is not None:
            metadata[META_POOL] = self.options.pool.name
        if self.batch_size is not None:
            metadata[META_BATCH_SIZE] = str(self.batch_size)
        if deadline is not None:
            metadata[META_DEADLINE] = str(math.ceil(deadline + WORKER_DEADLINE_SLACK_S))
        if claimed:
            metadata.update(standby_metadata(self.options, self.image))
        return machine_config(
            self.options,
            image=self.image,
            payload=payload,
            metadata=metadata,
            lifetime=Claimed() if claimed else Ephemeral(),
            files=(
                []
                if self.code is None or self.code_url is not None
                else [(bundle_guest_path(self.code), self.code.data)]
            ),
        )


def new_call_id() -> str:
    """A fresh call id, usable as a machine name (lowercase letters, digits, dashes)."""
    return "fj-" + secrets.token_hex(8)


def new_batch_id() -> str:
    """A fresh batch id; the batch's call ids are ``<batch_id>-<index>``."""
    return "fjb-" + secrets.token_hex(6)


def resolve_target(options: CallOptions) -> tuple[CallOptions, str, str]:
    """``options`` with the settings' defaults applied, and the app and image calls run with.

    Starts the runtime (`get_runtime`) once the settings are known to be complete.

    :raises ConfigError: a setting the calls need (image, app) is missing (all of them are
        named, with where to set each).
    """
    settings = current_settings()
    options = options.merged(settings.defaults)
    # Everything missing for Fly is one ConfigError saying where to set each, before any machine.
    settings.check_fly(app=options.app, image=options.image)
    runtime = get_runtime()
    image = options.image or runtime.image
    app = options.app or runtime.app
    if image is None or app is None:
        raise AssertionError("check_fly lets no call through without an app and an image")
    return options, app, image


def plan(
    fn: Callable[..., Any],
    options: CallOptions,
    *,
    batch_id: str | None,
    detach: bool = False,
) -> Plan:
    """The plan of ``fn``'s calls with ``options`` (settings' defaults applied).

    Starts the runtime (`get_runtime`) once the settings are known to be complete.

    :raises ConfigError: a setting the calls need (image, app) is missing (all of them are
        named, with where to set each), or a call is made while a machine imports the
        function's module.
    :raises SerializationError: the function cannot be referenced by the worker.
    """
    importing = importing_function()
    if importing is not None:
        raise ConfigError(
            f"a remote call was made while the machine imported {importing}: code at the top"
            " level of a module runs again on every machine that imports it, so each machine"
            ' would start the next; put the calls under `if __name__ == "__main__":`'
        )
    if interactive(fn) and (options.code or current_settings().code) == "sync":
        # A notebook's (or REPL's) function: made a module by its source, which ships.
        module_name, source = main_module_source(fn)
        fn_ref, sys_path = f"{module_name}:{fn.__qualname__}", list[str]()
        options, app, image = resolve_target(options)
        runtime = get_runtime()
        code: Bundle | None = bundle_of_source(
            module_name, source, max_bytes=runtime.settings.code_max_bytes
        )
    else:
        fn_ref, sys_path = function_reference(fn)
        options, app, image = resolve_target(options)
        runtime = get_runtime()
        code = code_bundle(fn_ref, options)
    code_url = None
    # A pool's machines serve calls of several bundles (after an edit): each call names its
    # own by URL, so that a machine started with another can fetch it.
    fetched = options.pool is not None
    if code is not None and (fetched or not inline(code, runtime.settings.code_inline_max_bytes)):
        # Uploaded (or served) once per plan: a map's machines, or a pool's, all GET one URL.
        expires_at = time.time() + CODE_URL_TTL_S
        code_url = runtime.channel.code_url(code.sha256, code.data, expires_at)
    return Plan(
        code=code,
        code_url=code_url,
        seal_key=runtime.result_key,
        fn_ref=fn_ref,
        sys_path=_portable([*sys_path, *_import_root(fn_ref)]),
        arg_names=_positional_names(fn),
        options=options,
        batch_id=batch_id,
        app=app,
        image=image,
        detach=detach,
        output=resolve_output(
            options.output, current_settings().output, batch=batch_id is not None
        ),
    )


def code_bundle(fn_ref: str, options: CallOptions, *, purpose: str = "") -> Bundle | None:
    """The code bundle the calls of ``fn_ref`` carry: None with ``code="image"`` (option,
    else ``FLYJOBS_CODE``) or when the function's module is installed, not the project's.

    :param purpose: what must carry the bundle inside its machine config (a scheduled
        function, whose machine outlives any URL); empty for calls, whose larger bundles
        machines GET from the inbox or the store.
    :raises ConfigError: the bundle is over ``FLYJOBS_CODE_MAX_BYTES``, or (with ``purpose``)
        too large to travel inside the machine config (``FLYJOBS_CODE_INLINE_MAX_BYTES``).
    """
    settings = current_settings()
    if (options.code or settings.code) != "sync":
        return None
    bundle = bundle_for(fn_ref, max_bytes=settings.code_max_bytes)
    if purpose and bundle is not None and not inline(bundle, settings.code_inline_max_bytes):
        raise ConfigError(
            f"the code of {fn_ref} zips to {len(bundle.data)} bytes, over the"
            f" {settings.code_inline_max_bytes} bytes that travel inside a machine config"
            f" (FLYJOBS_CODE_INLINE_MAX_BYTES), and {purpose} carries it in its machine's"
            " config (a URL would expire); raise it, keep files out with"
            f" {bundle.root / '.flyjobsignore'}, or run the image's code with code='image'"
        )
    return bundle


def _import_root(fn_ref: str) -> list[str]:
    """The folder the function's top-level package was imported from (see `_portable`)."""
    module = sys.modules.get(fn_ref.partition(":")[0])
    path = getattr(module, "__file__", None)
    if module is None or not path:
        return []
    root = os.path.dirname(os.path.abspath(path))
    depth = module.__name__.count(".") + (os.path.basename(path) == "__init__.py")
    for _ in range(depth):
        root = os.path.dirname(root)
    return [root]


def _portable(roots: list[str]) -> list[str]:
    """Import roots as the worker should try them: for one inside the working directory, the
    same path relative to it. An image copies the project to its WORKDIR, where the worker
    starts, so ``examples/`` here is ``/app/examples`` there (with ``code="image"``). Never an
    absolute path into this host's folders: a machine sees what a Fly machine would (the
    image, standing in locally for the installed distributions, and the code its calls ship),
    and a local machine starts in its own root, where a relative path names nothing of the
    caller's."""
    cwd = os.getcwd()
    portable: list[str] = []
    for root in roots:
        relative = os.path.relpath(root, cwd)
        if relative not in portable and relative != "." and not relative.startswith(".."):
            portable.append(relative)
    return portable


def check_arguments(
    fn: Callable[..., Any], fn_ref: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> None:
    """Refuse arguments ``fn`` does not take, as calling it here would, before any machine.

    :raises SerializationError: (also a TypeError) the arguments do not fit ``fn``'s signature.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no signature to check (a builtin): the machine's call tells
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        empty = inspect.Parameter.empty
        bare = signature.replace(
            parameters=[p.replace(annotation=empty) for p in signature.parameters.values()],
            return_annotation=empty,
        )
        raise SerializationError(f"{fn_ref}{bare}: {exc}; no machine was created") from None


def _positional_names(fn: Callable[..., Any]) -> list[str]:
    """Names of ``fn``'s positional parameters, so errors can name an argument."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in kinds]


def from_record(record: Mapping[str, Any]) -> Plan:
    """The plan of a detached call, from its sealed record (see `flyjobs._calls.detach`): what
    reading its result and destroying its machine need. Its result is decoded by the options
    the record gives, never by what the result says."""
    options = CallOptions(timeout_s=record["timeout_s"], pickle=record["pickle"])
    return Plan(
        fn_ref=record["fn_ref"],
        sys_path=(),
        arg_names=(),
        options=options,
        batch_id=None,
        app=record["app"],
        image="",
        detach=True,
    )

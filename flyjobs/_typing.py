"""``typing``'s generics for type checkers, and free stand-ins at run time.

Modules that a machine imports when it runs a call (`flyjobs._declare.function` through the
user's own module) take their generic helpers from here: importing ``typing`` itself costs each
machine ~6 ms of start. Type checkers (and ruff, through ``typing-modules``) see the real
``typing`` names.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Generic, ParamSpec, TypeVar, overload
else:

    class Generic:
        """Stands in for ``typing.Generic``: ``Generic[P, R]`` is this plain class."""

        __slots__ = ()

        def __class_getitem__(cls, _params: object) -> type:
            return cls

    def ParamSpec(name: str) -> str:
        return name

    def TypeVar(name: str, **_variance: bool) -> str:
        return name

    def overload(fn: object) -> object:
        return fn


__all__ = ("Generic", "ParamSpec", "TypeVar", "overload")

"""The curated public API of flyjobs.machines."""

from __future__ import annotations

import inspect

import pydantic

import flyjobs.machines
from flyjobs.machines import _config_models, _response_models


def test_all_resolves_without_duplicates() -> None:
    names = flyjobs.machines.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(flyjobs.machines, name) is not None


def test_every_model_is_exported() -> None:
    for module in (_config_models, _response_models):
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, pydantic.BaseModel):
                if not name.startswith("_") and value.__module__ == module.__name__:
                    assert name in flyjobs.machines.__all__, name

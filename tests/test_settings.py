"""Settings come from code, the environment and [tool.flyjobs], in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

import flyjobs
from flyjobs._declare.options import CallOptions
from flyjobs._settings import Settings


def _project(tmp_path: Path, table: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(f"[project]\nname='x'\n\n[tool.flyjobs]\n{table}\n")
    sub = tmp_path / "src" / "pkg"
    sub.mkdir(parents=True, exist_ok=True)
    return sub


def test_pyproject_table_is_found_from_a_subfolder(tmp_path: Path) -> None:
    cwd = _project(tmp_path, 'app = "from-file"\nimage = "img:1"\nmemory_mb = 512')
    settings = Settings.load(environ={}, cwd=cwd)
    assert settings.app == "from-file"
    assert settings.image == "img:1"
    assert settings.defaults == {"memory_mb": 512}
    assert settings.embedded
    assert settings.source == tmp_path / "pyproject.toml"


def test_environment_overrides_pyproject(tmp_path: Path) -> None:
    cwd = _project(tmp_path, 'app = "from-file"')
    env = {"FLY_APP": "from-env", "FLYJOBS_IMAGE": "img:env", "FLY_API_TOKEN": "secret-tok"}
    settings = Settings.load(environ=env, cwd=cwd)
    assert (settings.app, settings.image) == ("from-env", "img:env")
    assert not settings.embedded
    assert "secret-tok" not in repr(settings)


def test_missing_setting_names_variable_and_key(tmp_path: Path) -> None:
    settings = Settings.load(environ={}, cwd=tmp_path)
    with pytest.raises(flyjobs.ConfigError) as exc:
        settings.require("image")
    assert "FLYJOBS_IMAGE" in str(exc.value)
    assert "[tool.flyjobs]" in str(exc.value)


def test_unknown_key_and_token_in_pyproject_are_refused(tmp_path: Path) -> None:
    with pytest.raises(flyjobs.ConfigError, match="unknown key"):
        Settings.load(environ={}, cwd=_project(tmp_path, "colour = 1"))
    with pytest.raises(flyjobs.ConfigError, match="never put a Fly token"):
        Settings.load(environ={}, cwd=_project(tmp_path, 'token = "x"'))


def test_code_overrides_pyproject_defaults() -> None:
    options = CallOptions(memory_mb=1024).merged({"memory_mb": 512, "region": "iad"})
    assert (options.memory_mb, options.region) == (1024, "iad")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"memory_mb": 300}, "multiples of 256"),
        ({"cpus": 3}, "cpus=3"),
        ({"size": "shared-cpu-2x", "memory_mb": 512}, "either size or cpus/memory_mb"),
        ({"timeout_s": 0}, "timeout_s=0"),
        ({"retries": -1}, "retries=-1"),
        ({"env": {"BAD-NAME": "1"}}, "BAD-NAME"),
    ],
)
def test_bad_options_fail_at_decoration(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(flyjobs.ConfigError, match=fragment.replace("(", r"\(")):
        flyjobs.remote(**kwargs)  # type: ignore[call-overload]


def test_rate_limits_come_from_the_environment_or_pyproject(tmp_path: Path) -> None:
    assert Settings.load(environ={}, cwd=tmp_path).rate_limits == "auto"
    cwd = _project(tmp_path, 'rate_limits = "off"')
    assert Settings.load(environ={}, cwd=cwd).rate_limits == "off"
    assert Settings.load(environ={"FLYJOBS_RATE_LIMITS": "fly"}, cwd=cwd).rate_limits == "fly"
    with pytest.raises(flyjobs.ConfigError, match="FLYJOBS_RATE_LIMITS"):
        Settings.load(environ={"FLYJOBS_RATE_LIMITS": "fast"}, cwd=cwd)


def test_standby_comes_from_the_environment_or_pyproject(tmp_path: Path) -> None:
    assert Settings.load(environ={}, cwd=tmp_path).standby is False
    cwd = _project(tmp_path, "standby = true")
    assert Settings.load(environ={}, cwd=cwd).standby is True
    assert Settings.load(environ={"FLYJOBS_STANDBY": "0"}, cwd=cwd).standby is False
    with pytest.raises(flyjobs.ConfigError, match="FLYJOBS_STANDBY"):
        Settings.load(environ={"FLYJOBS_STANDBY": "sometimes"}, cwd=cwd)


def test_on_a_fly_machine_calls_go_to_its_own_app_and_image(tmp_path: Path) -> None:
    machine = {
        "FLY_MACHINE_ID": "0e286039f42e86",
        "FLY_APP_NAME": "my-app",
        "FLY_IMAGE_REF": "registry.fly.io/my-app:deployment-1",
    }
    settings = Settings.load(environ=machine, cwd=tmp_path)
    assert settings.in_machine and not settings.embedded  # never an emulator on a machine
    assert (settings.app, settings.image) == ("my-app", "registry.fly.io/my-app:deployment-1")
    assert settings.api_hostname == "http://_api.internal:4280"
    with pytest.raises(flyjobs.ConfigError, match="FLY_API_TOKEN: set it as an app secret"):
        settings.check_fly(app=None, image=None)
    told = Settings.load(environ={**machine, "FLY_APP": "other-app"}, cwd=tmp_path)
    assert told.app == "other-app"

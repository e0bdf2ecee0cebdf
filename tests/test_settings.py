"""Settings: nested groups from .env and the environment, secrets masked, example in sync."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from chatling.core.errors import ConfigError
from chatling.core.paths import PROJECT_ROOT
from chatling.core.settings import Settings, env_example, load_settings, masked_settings


def test_env_example_lists_every_key_and_is_current() -> None:
    text = (PROJECT_ROOT / ".env.example").read_text()
    assert text == env_example(), (
        "regenerate: python -c 'from chatling.core.settings import env_example;...'"
    )
    for group, field in Settings.model_fields.items():
        if field.default_factory is None:
            continue
        for key in type(field.default_factory()).model_fields:
            assert f"CHATLING_{group.upper()}__{key.upper()}=" in text


def test_env_example_loads_as_the_defaults(monkeypatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("CHATLING_"):
            monkeypatch.delenv(key)
    loaded = load_settings(PROJECT_ROOT / ".env.example")
    assert masked_settings(loaded) == masked_settings(Settings(_env_file=None))


def test_nested_env_overrides_file(tmp_path, monkeypatch) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "CHATLING_REPLY__BOT_NAME=fromfile\nCHATLING_REPLY__CANDIDATES=2\n"
        'CHATLING_REPLY__EXTRA_BLOCKED_TERMS=["spoiler"]\n'
    )
    monkeypatch.setenv("CHATLING_REPLY__CANDIDATES", "6")
    monkeypatch.setenv("CHATLING_TWITCH__BOT_TOKEN", "tok-abc")
    s = load_settings(env)
    assert s.reply.bot_name == "fromfile"
    assert s.reply.candidates == 6
    assert s.reply.extra_blocked_terms == ["spoiler"]
    assert isinstance(s.twitch.bot_token, SecretStr)
    assert s.twitch.bot_token.get_secret_value() == "tok-abc"
    assert "tok-abc" not in repr(s) and "tok-abc" not in str(masked_settings(s))


def test_bad_value_is_a_config_error_naming_the_key(tmp_path) -> None:
    env = tmp_path / ".env"
    env.write_text("CHATLING_STORAGE__FLUSH_INTERVAL_S=soon\n")
    with pytest.raises(ConfigError, match=r"storage\.flush_interval_s"):
        load_settings(env)

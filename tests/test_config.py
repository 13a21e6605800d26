"""Settings: sources and precedence, durations, validation messages, unknown keys, docs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic
import pytest

from squall.config import (
    LoadedSettings,
    Settings,
    check_listen_safety,
    env_var_name,
    format_duration,
    generate_config,
    is_loopback,
    load_settings,
    parse_duration,
)
from squall.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_squall_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("SQUALL_"):
            monkeypatch.delenv(name)


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def load(path: Path | None = None, **kwargs: Any) -> LoadedSettings:
    kwargs.setdefault("env", {})
    return load_settings(path, **kwargs)


def config_error(path: Path | None = None, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, **kwargs)
    return str(info.value)


# --- defaults and attribute paths ------------------------------------------------------------


def test_defaults_follow_centrifugo_and_squall_choices() -> None:
    s = load().settings
    assert (s.http_server.address, s.http_server.port) == ("127.0.0.1", 8000)
    assert s.http_server.max_header_size == 16384
    assert s.http_server.max_body_size == 1048576
    assert s.http_server.header_timeout == 10.0
    assert s.http_server.body_timeout == 30.0
    assert s.http_server.keep_alive_timeout == 75.0
    assert s.log.level == "info"
    assert (s.http_api.key, s.http_api.insecure) == ("", False)
    assert s.client.token.hmac_secret_key == ""
    assert s.client.allowed_origins == []
    assert s.client.allow_anonymous_connect_without_token is False
    assert (s.client.ping_interval, s.client.pong_timeout) == (25.0, 8.0)
    assert s.client.queue_max_size == 1048576
    assert s.client.channel_limit == 128
    assert s.client.user_connection_limit == 0
    assert s.client.stale_close_delay == 10.0
    assert s.client.expired_close_delay == 25.0
    assert s.client.history_max_publication_limit == 300
    assert s.client.connect_include_server_time is False
    assert s.channel.namespaces == []
    assert s.channel.max_length == 255
    assert s.channel.namespace_boundary == ":"
    assert s.channel.history_meta_ttl == 720 * 3600.0
    opts = s.channel.without_namespace
    assert (opts.history_size, opts.history_ttl) == (0, 0.0)
    assert opts.force_recovery_mode == "stream"
    assert opts.pattern_separator == "."
    # Every permission and feature is off by default (Centrifugo's choice).
    assert not any(
        v
        for k, v in opts.model_dump().items()
        if k not in ("history_size", "force_recovery_mode", "pattern_separator")
    )
    assert s.websocket.message_size_limit == 65536
    assert s.websocket.write_timeout == 1.0
    assert s.shutdown.timeout == 30.0
    assert s.health.enabled is True
    assert s.prometheus.enabled is True
    assert s.development is False


def test_settings_are_immutable() -> None:
    s = load().settings
    with pytest.raises(pydantic.ValidationError):
        s.http_server.port = 1
    assert s.model_copy(update={"development": True}).development is True


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("25s", 25.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("720h", 2592000.0),
        ("1.5s", 1.5),
        ("1h2m3s4ms", 3723.004),
        ("250us", 0.00025),
        ("0", 0.0),
        ("30", 30.0),
        (" 2.5 ", 2.5),
        (30, 30.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["abc", "", "s", "10x", "1h 2m", "-1s", "-5", "nan", "inf", True, None, [1]]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize("seconds", [0.0, 0.5, 1.0, 25.0, 75.0, 90.0, 3600.0, 2592000.0, 1.25])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_duration_reads_like_centrifugo() -> None:
    assert [format_duration(s) for s in (25.0, 0.5, 90.0, 2592000.0, 0.0)] == [
        "25s",
        "500ms",
        "1m30s",
        "720h",
        "0s",
    ]


# --- file formats ------------------------------------------------------------------------------

JSON_TEXT = """{
  "http_server": {"port": 9001},
  "client": {"ping_interval": "30s", "allowed_origins": ["https://example.com"]},
  "channel": {"namespaces": [{"name": "chat", "history_size": 10, "history_ttl": "60s"}]}
}"""
YAML_TEXT = """
http_server:
  port: 9001
client:
  ping_interval: 30s
  allowed_origins:
    - https://example.com
channel:
  namespaces:
    - name: chat
      history_size: 10
      history_ttl: 60s
"""
TOML_TEXT = """
[http_server]
port = 9001

[client]
ping_interval = "30s"
allowed_origins = ["https://example.com"]

[[channel.namespaces]]
name = "chat"
history_size = 10
history_ttl = "60s"
"""


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("squall.json", JSON_TEXT),
        ("squall.yaml", YAML_TEXT),
        ("squall.yml", YAML_TEXT),
        ("squall.toml", TOML_TEXT),
        ("SQUALL.JSON", JSON_TEXT),
    ],
)
def test_each_file_format(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    loaded = load(path)
    s = loaded.settings
    assert s.http_server.port == 9001
    assert s.client.ping_interval == 30.0
    assert s.client.allowed_origins == ["https://example.com"]
    (chat,) = s.channel.namespaces
    assert (chat.name, chat.history_size, chat.history_ttl) == ("chat", 10, 60.0)
    assert loaded.unknown_keys == []


def test_path_may_be_a_string(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {"log": {"level": "debug"}})
    assert load_settings(str(path), env={}).settings.log.level == "debug"


def test_empty_yaml_file_is_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("", encoding="utf-8")
    assert load(path).settings == load().settings


def test_centrifugo_config_loads_unchanged(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.json",
        {
            "client": {
                "token": {"hmac_secret_key": "my-secret-of-at-least-32-bytes-long!"},
                "allowed_origins": ["http://localhost:3000"],
            },
            "http_api": {"key": "my-api-key"},
            "channel": {
                "without_namespace": {
                    "presence": True,
                    "history_size": 10,
                    "history_ttl": "300s",
                    "allow_publish_for_subscriber": True,
                },
                "namespaces": [{"name": "facts", "history_size": 10, "history_ttl": "300s"}],
            },
        },
    )
    loaded = load(path)
    s = loaded.settings
    assert s.client.token.hmac_secret_key == "my-secret-of-at-least-32-bytes-long!"
    assert s.client.allowed_origins == ["http://localhost:3000"]
    assert s.http_api.key == "my-api-key"
    opts = s.channel.without_namespace
    assert opts.presence
    assert opts.allow_publish_for_subscriber
    assert (opts.history_size, opts.history_ttl) == (10, 300.0)
    assert loaded.unknown_keys == []


# --- file problems -----------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    assert config_error(path) == f"{path}: config file not found"


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "c.ini"
    path.write_text("", encoding="utf-8")
    assert "unsupported config file extension '.ini'" in config_error(path)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{\n  "log": {"level": "info",}\n}', encoding="utf-8")
    assert config_error(path).startswith(f"{path}: invalid JSON at line 2")


@pytest.mark.parametrize(("name", "text"), [("c.yaml", "a: [1"), ("c.toml", "a = ")])
def test_invalid_yaml_and_toml(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert config_error(path).startswith(f"{path}: invalid ")


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("[1, 2]", encoding="utf-8")
    assert "the top level must be an object, not list" in config_error(path)


# --- environment and precedence ------------------------------------------------------------------


def test_env_var_name() -> None:
    assert env_var_name("http_api.key") == "SQUALL_HTTP_API__KEY"
    assert (
        env_var_name("channel.without_namespace.presence")
        == "SQUALL_CHANNEL__WITHOUT_NAMESPACE__PRESENCE"
    )


def test_env_sets_every_kind_of_option() -> None:
    s = load(
        env={
            "SQUALL_HTTP_API__KEY": "k",
            "SQUALL_HTTP_SERVER__PORT": "9100",
            "SQUALL_CHANNEL__WITHOUT_NAMESPACE__PRESENCE": "true",
            "SQUALL_CLIENT__ALLOWED_ORIGINS": '["https://a.example", "https://b.example"]',
            "SQUALL_CLIENT__PING_INTERVAL": "1m",
            "SQUALL_CLIENT__PONG_TIMEOUT": "10",
            "SQUALL_CHANNEL__NAMESPACES": '[{"name": "ns1"}, {"name": "ns2", "presence": true}]',
            "SQUALL_LOG__LEVEL": "DEBUG",
            "SQUALL_DEVELOPMENT": "1",
            "OTHER_VAR": "ignored",
        }
    ).settings
    assert s.http_api.key == "k"
    assert s.http_server.port == 9100
    assert s.channel.without_namespace.presence is True
    assert s.client.allowed_origins == ["https://a.example", "https://b.example"]
    assert (s.client.ping_interval, s.client.pong_timeout) == (60.0, 10.0)
    assert [(n.name, n.presence) for n in s.channel.namespaces] == [("ns1", False), ("ns2", True)]
    assert s.log.level == "debug"
    assert s.development is True


def test_env_section_as_json_merges_into_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {"client": {"channel_limit": 5, "ping_interval": "30s"}})
    s = load(path, env={"SQUALL_CLIENT": '{"channel_limit": 7}'}).settings
    assert (s.client.channel_limit, s.client.ping_interval) == (7, 30.0)


def test_empty_env_var_counts_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {"http_api": {"key": "from-file"}})
    assert load(path, env={"SQUALL_HTTP_API__KEY": ""}).settings.http_api.key == "from-file"


def test_precedence_overrides_then_env_then_file_then_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.json",
        {"http_server": {"port": 1111, "address": "127.0.0.2"}, "log": {"level": "error"}},
    )
    env = {"SQUALL_HTTP_SERVER__PORT": "2222", "SQUALL_LOG__LEVEL": "warn"}
    s = load(path, env=env, overrides={"http_server.port": 3333, "log.level": None}).settings
    assert s.http_server.port == 3333  # overrides beat env
    assert s.log.level == "warn"  # None overrides are skipped; env beats the file
    assert s.http_server.address == "127.0.0.2"  # the file beats the defaults
    assert s.shutdown.timeout == 30.0  # the defaults


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUALL_HTTP_SERVER__PORT", "9200")
    assert load_settings().settings.http_server.port == 9200
    # An explicit mapping replaces os.environ entirely.
    assert load_settings(env={}).settings.http_server.port == 8000


def test_settings_constructor_reads_env_like_pydantic_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SQUALL_CLIENT__PING_INTERVAL", "40s")
    monkeypatch.setenv("SQUALL_CHANNEL__WITHOUT_NAMESPACE__PRESENCE", "true")
    s = Settings()
    assert s.client.ping_interval == 40.0
    assert s.channel.without_namespace.presence is True
    # load_settings layers env itself and ignores os.environ when given a mapping.
    assert load_settings(env={}).settings.client.ping_interval == 25.0


def test_unknown_override_path_is_an_error() -> None:
    assert config_error(overrides={"http_server.prot": 1}) == (
        "http_server.prot: no such option (from overrides)"
    )


def test_env_invalid_json_names_the_variable() -> None:
    message = config_error(env={"SQUALL_CLIENT__ALLOWED_ORIGINS": "https://a.example"})
    assert message.startswith("client.allowed_origins: invalid JSON")
    assert message.endswith("(from SQUALL_CLIENT__ALLOWED_ORIGINS)")


# --- validation errors -------------------------------------------------------------------------


def test_error_names_path_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "squall.json", {"client": {"ping_interval": "abc"}})
    assert config_error(path) == f'client.ping_interval: invalid duration "abc" (from {path})'


def test_error_names_the_env_var() -> None:
    assert config_error(env={"SQUALL_HTTP_SERVER__PORT": "eighty"}) == (
        "http_server.port: input should be a valid integer, unable to parse string as an "
        'integer, got "eighty" (from SQUALL_HTTP_SERVER__PORT)'
    )


def test_error_names_overrides() -> None:
    assert config_error(overrides={"http_server.port": 70000}).endswith(
        "less than or equal to 65535, got 70000 (from overrides)"
    )


def test_every_error_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.json",
        {
            "log": {"level": "verbose"},
            "websocket": {"message_size_limit": 0},
            "channel": {"namespaces": [{"name": "x"}, {"presence": True}]},
        },
    )
    lines = config_error(path, env={"SQUALL_SHUTDOWN__TIMEOUT": "soon"}).splitlines()
    assert lines == [
        "log.level: input should be 'trace', 'debug', 'info', 'warn', 'error' or 'none', "
        f'got "verbose" (from {path})',
        "channel.namespaces[0].name: string should match pattern '^[-a-zA-Z0-9_.]{2,}$', "
        f'got "x" (from {path})',
        f"channel.namespaces[1].name: field required (from {path})",
        f"websocket.message_size_limit: input should be greater than or equal to 1, got 0 "
        f"(from {path})",
        'shutdown.timeout: invalid duration "soon" (from SQUALL_SHUTDOWN__TIMEOUT)',
    ]


def test_secrets_are_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {"client": {"token": {"hmac_secret_key": 987654321}}})
    message = config_error(path)
    assert message == (
        f"client.token.hmac_secret_key: input should be a valid string (from {path})"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"history_size": 10},
            "channel.without_namespace.history_ttl: must be set when history_size is set "
            "(10): history needs both",
        ),
        (
            {"history_ttl": "60s"},
            "channel.without_namespace.history_ttl: is set but history_size is 0: history "
            "needs both",
        ),
        (
            {"history_size": 1, "history_ttl": "1500ms"},
            "channel.without_namespace.history_ttl: must be a whole number of seconds, got 1.5",
        ),
    ],
)
def test_history_needs_size_and_ttl(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    path = write(tmp_path / "c.json", {"channel": {"without_namespace": options}})
    assert config_error(path) == f"{message} (from {path})"


def test_history_rule_applies_to_namespaces_too(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.json", {"channel": {"namespaces": [{"name": "chat", "history_size": 5}]}}
    )
    assert config_error(path).startswith("channel.namespaces[0].history_ttl: must be set")


def test_duplicate_namespace_names(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {"channel": {"namespaces": [{"name": "ab"}, {"name": "ab"}]}})
    assert config_error(path) == (
        f'channel.namespaces: duplicate namespace name "ab" (from {path})'
    )


@pytest.mark.parametrize("name", ["ab", "a-b_c.d", "A1"])
def test_valid_namespace_names(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "c.json", {"channel": {"namespaces": [{"name": name}]}})
    assert load(path).settings.channel.namespaces[0].name == name


@pytest.mark.parametrize("name", ["a", "a:b", "a b", "", "ü1"])
def test_invalid_namespace_names(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "c.json", {"channel": {"namespaces": [{"name": name}]}})
    assert config_error(path).startswith("channel.namespaces[0].name: string should match")


def test_pong_timeout_must_be_below_ping_interval() -> None:
    assert config_error(env={"SQUALL_CLIENT__PONG_TIMEOUT": "30s"}) == (
        "client.pong_timeout: must be less than client.ping_interval (25s) "
        "(from SQUALL_CLIENT__PONG_TIMEOUT)"
    )


def test_history_meta_ttl_must_cover_history_ttl(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.json",
        {
            "channel": {
                "history_meta_ttl": "1h",
                "namespaces": [{"name": "long", "history_size": 1, "history_ttl": "2h"}],
            }
        },
    )
    assert config_error(path) == (
        'channel.history_meta_ttl: must not be less than the history_ttl of namespace "long" '
        f"(2h) (from {path})"
    )


# --- unknown keys ------------------------------------------------------------------------------


def test_unknown_keys_in_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "squall.json",
        {
            "nope": {"deep": 1},
            "client": {"foo": 1, "token": {"rsa_public_key": "x"}},
            "channel": {"namespaces": [{"name": "ab", "colour": "red"}]},
            "engine": {"type": "memory"},
        },
    )
    loaded = load(path)
    assert loaded.unknown_keys == [
        "nope",
        "client.foo",
        "client.token.rsa_public_key",
        "channel.namespaces[0].colour",
        "engine",
    ]
    assert loaded.warnings()[:2] == [
        f"unknown option nope in {path}",
        f"unknown option client.foo in {path}",
    ]


def test_unknown_keys_in_the_env() -> None:
    loaded = load(
        env={
            "SQUALL_NOPE": "1",
            "SQUALL_CLIENT__FOO": "1",
            "SQUALL_HTTP_API__KEY__EXTRA": "1",
            "SQUALL_CLIENT__TOKEN": '{"hmac_secret_key": "s", "bogus": 1}',
            "SQUALL_CHANNEL__NAMESPACES": '[{"name": "ab", "colour": "red"}]',
        }
    )
    assert sorted(loaded.unknown_keys) == [
        "channel.namespaces[0].colour",
        "client.foo",
        "client.token.bogus",
        "http_api.key.extra",
        "nope",
    ]
    assert loaded.unknown_key_sources["client.foo"] == "SQUALL_CLIENT__FOO"
    assert loaded.unknown_key_sources["client.token.bogus"] == "SQUALL_CLIENT__TOKEN"
    assert loaded.settings.client.token.hmac_secret_key == "s"
    assert loaded.settings.http_api.key == ""  # SQUALL_HTTP_API__KEY__EXTRA set nothing


# --- generated configs and listen safety -------------------------------------------------------


def test_generate_config_has_fresh_secrets(tmp_path: Path) -> None:
    first, second = generate_config(development=False), generate_config(development=False)
    assert (
        first["client"]["token"]["hmac_secret_key"] != second["client"]["token"]["hmac_secret_key"]
    )
    assert first["http_api"]["key"] != second["http_api"]["key"]
    s = load(write(tmp_path / "c.json", first)).settings
    assert len(s.client.token.hmac_secret_key) >= 32
    assert len(s.http_api.key) >= 32
    assert s.development is False
    assert s.client.allowed_origins == []


def test_generate_development_config(tmp_path: Path) -> None:
    loaded = load(write(tmp_path / "c.json", generate_config(development=True)))
    s = loaded.settings
    assert loaded.unknown_keys == []
    assert s.development is True
    assert s.client.allowed_origins == ["http://localhost:*", "http://127.0.0.1:*"]
    assert s.channel.without_namespace.allow_subscribe_for_client
    check_listen_safety(s)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("", False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_loopback_needs_no_secrets() -> None:
    check_listen_safety(load().settings)
    check_listen_safety(load(overrides={"development": True}).settings)


def test_public_address_needs_both_secrets() -> None:
    s = load(overrides={"http_server.address": "0.0.0.0"}).settings
    with pytest.raises(ConfigError) as info:
        check_listen_safety(s)
    lines = str(info.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "client.token.hmac_secret_key",
        "http_api.key",
    ]


def test_public_address_with_secrets_or_insecure_api_is_allowed() -> None:
    base = {"http_server.address": "", "client.token.hmac_secret_key": "s" * 32}
    check_listen_safety(load(overrides={**base, "http_api.key": "k"}).settings)
    check_listen_safety(load(overrides={**base, "http_api.insecure": True}).settings)


def test_development_mode_only_on_loopback() -> None:
    s = load(
        overrides={
            "http_server.address": "10.0.0.1",
            "client.token.hmac_secret_key": "s" * 32,
            "http_api.key": "k",
            "development": True,
        }
    ).settings
    with pytest.raises(ConfigError, match=r'^development: .*"10\.0\.0\.1"$'):
        check_listen_safety(s)


# --- generated docs ----------------------------------------------------------------------------


def _gen_docs_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", ROOT / "scripts" / "gen_config_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def test_configuration_docs_are_up_to_date() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert text == _gen_docs_module().render(), "run python scripts/gen_config_docs.py"


def test_docs_cover_every_option_with_a_description() -> None:
    options = list(_gen_docs_module().iter_options(Settings))
    paths = {o.path for o in options}
    assert {"http_server.port", "client.token.hmac_secret_key", "channel.namespaces[].name"} <= (
        paths
    )
    assert "channel.without_namespace.allow_presence_for_anonymous" in paths
    assert all(o.description for o in options)

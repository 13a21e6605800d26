"""Squall's settings: one model, loaded from a file, ``SQUALL_*`` environment variables and flags.

Theory of operation
-------------------
``Settings`` is a pydantic-settings model whose sections and option names follow Centrifugo v6
(``client.token.hmac_secret_key``, ``channel.without_namespace.presence``, ...), so a Centrifugo
config file for the features Squall has loads unchanged. Options only Squall has are marked so
in their descriptions; docs/configuration.md is generated from those descriptions
(scripts/gen_config_docs.py).

:func:`load_settings` layers the sources, highest priority first:

1. ``overrides`` (the CLI's flags), as dotted paths: ``{"http_server.port": 9000}``;
2. environment variables ``SQUALL_`` + the option path, upper-cased, ``__`` between levels:
   ``SQUALL_HTTP_API__KEY``, ``SQUALL_CHANNEL__WITHOUT_NAMESPACE__PRESENCE=true``. Lists and
   objects are JSON (``SQUALL_CLIENT__ALLOWED_ORIGINS='["https://example.com"]'``). An empty
   variable counts as unset, as in Centrifugo;
3. a config file, JSON, YAML or TOML by its extension;
4. the defaults.

It reports keys that match no option (Centrifugo logs these as warnings and carries on), and
turns validation failures into one :class:`~squall.errors.ConfigError` whose message names every
bad option by its dotted path and the source it came from.

Durations (:data:`Duration`) accept Centrifugo's duration strings (``"25s"``, ``"500ms"``,
``"1m30s"``, ``"720h"``) and plain numbers of seconds, and are stored as float seconds.

This module imports nothing from squall but :mod:`squall.errors` and :mod:`squall.types`.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import secrets
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from squall.errors import ConfigError

__all__ = [
    "DURATION",
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "NAMESPACE_NAME_PATTERN",
    "ChannelOptions",
    "ChannelSettings",
    "ClientSettings",
    "ClientTokenSettings",
    "Duration",
    "HTTPAPISettings",
    "HTTPServerSettings",
    "HealthSettings",
    "LoadedSettings",
    "LogLevel",
    "LogSettings",
    "Namespace",
    "PrometheusSettings",
    "Settings",
    "ShutdownSettings",
    "WebSocketSettings",
    "check_listen_safety",
    "env_var_name",
    "format_duration",
    "generate_config",
    "is_loopback",
    "load_settings",
    "parse_duration",
]

ENV_PREFIX: Final = "SQUALL_"
ENV_NESTED_DELIMITER: Final = "__"
NAMESPACE_NAME_PATTERN: Final = r"^[-a-zA-Z0-9_.]{2,}$"
"""Centrifugo's namespace name rule (internal/config/validate.go ``namePattern``)."""

# --------------------------------------------------------------------------------------------
# Durations

_DURATION_UNITS: Final[Mapping[str, float]] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN, as Go's time.ParseDuration accepts
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def _invalid_duration(value: object) -> PydanticCustomError:
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    return PydanticCustomError("duration", "invalid duration {value}", {"value": shown})


def parse_duration(value: object) -> float:
    """Return ``value`` as non-negative seconds.

    Accepts a number of seconds (int, float, or a string holding one, as environment variables
    do) or a Go duration string as Centrifugo writes them: one or more ``<number><unit>`` parts
    with units ``ns``, ``us``, ``ms``, ``s``, ``m``, ``h`` (``"25s"``, ``"1m30s"``, ``"1.5h"``).

    .. note:: Centrifugo reads a bare JSON *number* as nanoseconds; Squall reads it as seconds.
       Duration strings mean the same in both.

    Raises ``pydantic_core.PydanticCustomError`` (a ``ValueError``) with the message
    ``invalid duration "<value>"`` for anything else, including negative and non-finite values.
    """
    if isinstance(value, bool):
        raise _invalid_duration(value)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_go_duration(text, value)
    else:
        raise _invalid_duration(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise _invalid_duration(value)
    return seconds


def _parse_go_duration(text: str, original: str) -> float:
    if not text:
        raise _invalid_duration(original)
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise _invalid_duration(original)
        total += float(match[1]) * _DURATION_UNITS[match[2]]
        pos = match.end()
    return total


def format_duration(seconds: float) -> str:
    """Format seconds as a Centrifugo duration string: ``25.0 -> "25s"``, ``0.5 -> "500ms"``,
    ``90.0 -> "1m30s"``, ``2592000.0 -> "720h"``. ``parse_duration`` reads it back exactly."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, rest = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{int(hours)}h")
    if minutes:
        parts.append(f"{int(minutes)}m")
    if rest:
        parts.append(f"{round(rest, 9):g}s")
    return "".join(parts)


class _DurationMarker:
    """Marks an option as a duration in ``Annotated`` metadata (the docs generator reads it)."""

    def __repr__(self) -> str:
        return "DURATION"


DURATION: Final = _DurationMarker()

Duration = Annotated[float, BeforeValidator(parse_duration), DURATION]
"""Seconds as a float; configured as ``"25s"``, ``"500ms"``, ``"1m30s"`` or a number of seconds."""


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


LogLevel = Literal["trace", "debug", "info", "warn", "error", "none"]

# --------------------------------------------------------------------------------------------
# Sections


class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class HTTPServerSettings(_Section):
    """``http_server``: the listening socket and HTTP limits."""

    address: str = Field(
        default="127.0.0.1",
        description=(
            "Interface address to bind to. Squall binds to loopback by default (Centrifugo's "
            'default is "", every interface); use "0.0.0.0" or "" for every IPv4/IPv6 '
            "interface. A non-loopback address requires client.token.hmac_secret_key and "
            "http_api.key (or http_api.insecure)."
        ),
    )
    port: int = Field(
        default=8000, ge=0, le=65535, description="TCP port to bind to; 0 picks a free one."
    )
    max_header_size: int = Field(
        default=16384,
        ge=1,
        description=(
            "Squall only. Maximum size in bytes of an HTTP request line plus headers; larger "
            "requests get 431."
        ),
    )
    max_body_size: int = Field(
        default=1048576,
        ge=1,
        description=(
            "Squall only. Maximum size in bytes of an HTTP request body (server API, emulation, "
            "SockJS sends); larger bodies get 413."
        ),
    )
    header_timeout: Duration = Field(
        default=10.0,
        gt=0,
        description=(
            "Squall only. Time a client has to send a complete request line and headers before "
            "the connection is closed."
        ),
    )
    body_timeout: Duration = Field(
        default=30.0,
        gt=0,
        description="Squall only. Time a client has to send a complete request body.",
    )
    keep_alive_timeout: Duration = Field(
        default=75.0,
        gt=0,
        description="Squall only. How long an idle keep-alive HTTP connection stays open.",
    )


class LogSettings(_Section):
    """``log``: logging."""

    level: Annotated[LogLevel, BeforeValidator(_lower)] = Field(
        default="info",
        description=(
            'Log level: "trace", "debug", "info", "warn", "error" or "none" (no logs), as in '
            "Centrifugo."
        ),
    )


class HTTPAPISettings(_Section):
    """``http_api``: the server HTTP API at ``/api``."""

    key: str = Field(
        default="",
        description=(
            "API key that server API requests must carry, as `X-API-Key: <key>` or "
            "`Authorization: apikey <key>`. Keep it secret; `squall genconfig` generates one. "
            "With no key (and http_api.insecure off) every API request is refused."
        ),
    )
    insecure: bool = Field(
        default=False,
        description=(
            "Serve the server API without checking any key.\n\n"
            ".. warning:: Anyone who can reach the port can then publish to any channel, "
            "disconnect users and read presence and history. Use it only behind a firewall "
            "or on a trusted network."
        ),
    )


class ClientTokenSettings(_Section):
    """``client.token``: connection JWT verification."""

    hmac_secret_key: str = Field(
        default="",
        description=(
            "HMAC secret that connection JWTs are signed with (HS256). Keep it secret; "
            "`squall genconfig` generates one. Empty: JWTs are refused."
        ),
    )


class ClientSettings(_Section):
    """``client``: client connections."""

    token: ClientTokenSettings = Field(
        default=ClientTokenSettings(),
        description="Connection token (JWT) options.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description=(
            "Origins allowed to open a connection from a browser. Empty: same-origin only (the "
            "Origin header's host must equal the Host header). Entries are Centrifugo glob "
            'patterns: "https://example.com", "https://*.example.com", "http://localhost:*"; '
            '"*" allows every origin. Requests without an Origin header (not from a browser) '
            "are not checked.\n\n"
            '.. warning:: "*" lets any web page a user visits connect with that user\'s '
            "cookies; allow only the origins you serve."
        ),
    )
    allow_anonymous_connect_without_token: bool = Field(
        default=False,
        description=(
            "Accept connections that bring no token as anonymous (empty user ID). Channel "
            "operations must still be allowed for anonymous users per namespace."
        ),
    )
    ping_interval: Duration = Field(
        default=25.0,
        gt=0,
        description="Interval between server pings to each client.",
    )
    pong_timeout: Duration = Field(
        default=8.0,
        gt=0,
        validate_default=True,
        description=(
            "How long to wait for a client's pong after a ping before disconnecting it "
            "(code 3012). Must be less than client.ping_interval."
        ),
    )
    queue_max_size: int = Field(
        default=1048576,
        ge=1,
        description=(
            "Maximum bytes queued for one client; a client that falls further behind is "
            "disconnected as slow (code 3008)."
        ),
    )
    channel_limit: int = Field(
        default=128,
        ge=0,
        description="Maximum number of channels one client may subscribe to; 0: no limit.",
    )
    user_connection_limit: int = Field(
        default=0,
        ge=0,
        description=(
            "Maximum number of connections one user (non-empty user ID) may hold on this node; "
            "0: no limit."
        ),
    )
    stale_close_delay: Duration = Field(
        default=10.0,
        gt=0,
        description=(
            "How long a new connection may stay without sending its connect command before it "
            "is closed as stale (code 3502)."
        ),
    )
    expired_close_delay: Duration = Field(
        default=25.0,
        ge=0,
        description=(
            "How long an expired connection has to refresh its token before it is closed "
            "(code 3005)."
        ),
    )
    max_pending_commands: int = Field(
        default=1000,
        ge=1,
        description=(
            "Squall only. Maximum number of one client's commands waiting to run; a client "
            "that sends more before they complete is disconnected (3013, too many requests), "
            "so no client can make the server queue without bound."
        ),
    )
    recovery_max_publication_limit: int = Field(
        default=300,
        ge=1,
        description=(
            "Maximum number of publications one subscribe may recover; a client that missed "
            "more gets `recovered: false`."
        ),
    )
    history_max_publication_limit: int = Field(
        default=300,
        ge=1,
        description="Maximum number of publications one client history request returns.",
    )
    connect_include_server_time: bool = Field(
        default=False,
        description="Include the server time (Unix milliseconds) in the connect reply.",
    )

    @field_validator("pong_timeout")
    @classmethod
    def _pong_below_ping(cls, value: float, info: ValidationInfo) -> float:
        ping = info.data.get("ping_interval")
        if ping is not None and value >= ping:
            raise PydanticCustomError(
                "pong_timeout",
                "must be less than client.ping_interval ({ping})",
                {"ping": format_duration(ping)},
            )
        return value


class ChannelOptions(_Section):
    """Options for a group of channels: ``channel.without_namespace`` or one namespace.

    Every permission is off by default: a client may do nothing in a channel unless an option
    here, a token or an application handler allows it.
    """

    presence: bool = Field(default=False, description="Keep online presence (who is subscribed).")
    join_leave: bool = Field(default=False, description="Emit join and leave messages.")
    force_push_join_leave: bool = Field(
        default=False, description="Push join/leave messages to subscribers without being asked."
    )
    history_size: int = Field(
        default=0,
        ge=0,
        description=(
            "Maximum number of publications kept in each channel's history; 0: no history. "
            "Requires history_ttl."
        ),
    )
    history_ttl: Duration = Field(
        default=0.0,
        validate_default=True,
        description=(
            "How long publications stay in history (whole seconds, as in Centrifugo); 0: no "
            "history. Requires history_size."
        ),
    )
    force_positioning: bool = Field(
        default=False,
        description=(
            "Make every subscription positioned: the subscribe reply carries the stream's epoch "
            "and offset, and a subscriber whose stream may have a gap is disconnected with "
            "3010 (insufficient state) so it recovers. Needs history."
        ),
    )
    allow_positioning: bool = Field(
        default=False,
        description=(
            "Let clients ask for a positioned subscription themselves (they also need "
            "permission to read history). Needs history."
        ),
    )
    force_recovery: bool = Field(
        default=False,
        description=(
            "Make every subscription recoverable (and positioned): a client that resubscribes "
            "with its last epoch and offset gets the publications it missed, or "
            "`recovered: false` when they are no longer all held. Needs history."
        ),
    )
    allow_recovery: bool = Field(
        default=False,
        description=(
            "Let clients ask for a recoverable subscription themselves (they also need "
            "permission to read history). Needs history."
        ),
    )
    force_recovery_mode: Literal["stream", "cache"] = Field(
        default="stream",
        description=(
            'Recovery mode: "stream" replays every missed publication; "cache" delivers only '
            "the latest one (for channels whose publications are whole snapshots)."
        ),
    )
    allow_user_limited_channels: bool = Field(
        default=False,
        description=(
            "Let a client subscribe to user-limited channels, named `<name>#<user>,<user>...`, "
            "when its user ID is in the list after `#`."
        ),
    )
    channel_regex: str = Field(
        default="",
        description=(
            "A regular expression the channel name (after the namespace prefix) must match "
            "for client-side subscriptions; empty: any name."
        ),
    )
    allow_patterns: bool = Field(
        default=False,
        description=(
            "Squall only. Hierarchical channels with pattern subscriptions: names after the "
            "namespace prefix are segments joined by pattern_separator, and a client may "
            "subscribe to `ns:a.*.c` (`*` is one segment) or `ns:a.>` (`>` is every name "
            "below). The namespace keeps one history stream for all its channels, so a "
            "pattern subscriber's backlog comes merged in publish order and it recovers with "
            "one position. Pushes to a pattern subscriber name the pattern as their channel "
            "and the concrete channel in the publication's `channel` field and its `channel` "
            "tag."
        ),
    )
    pattern_separator: str = Field(
        default=".",
        min_length=1,
        max_length=1,
        description="Squall only. Segment separator of hierarchical channel names.",
    )
    allow_subscribe_for_client: bool = Field(
        default=False,
        description=(
            "Let every authenticated client subscribe to channels without a subscription token."
            "\n\n.. warning:: This makes the channels public to every user."
        ),
    )
    allow_subscribe_for_anonymous: bool = Field(
        default=False, description="Let anonymous clients (empty user ID) subscribe."
    )
    allow_publish_for_subscriber: bool = Field(
        default=False, description="Let a client publish to a channel it is subscribed to."
    )
    allow_publish_for_client: bool = Field(
        default=False,
        description=(
            "Let every authenticated client publish, subscribed or not.\n\n"
            ".. warning:: Publications from clients reach every subscriber unchecked; validate "
            "them in a publish handler if they matter."
        ),
    )
    allow_publish_for_anonymous: bool = Field(
        default=False, description="Let anonymous clients publish (with a permission above)."
    )
    allow_history_for_subscriber: bool = Field(
        default=False, description="Let a subscriber read the channel's history."
    )
    allow_history_for_client: bool = Field(
        default=False, description="Let every authenticated client read history."
    )
    allow_history_for_anonymous: bool = Field(
        default=False, description="Let anonymous clients read history (with a permission above)."
    )
    allow_presence_for_subscriber: bool = Field(
        default=False, description="Let a subscriber read presence and presence stats."
    )
    allow_presence_for_client: bool = Field(
        default=False, description="Let every authenticated client read presence."
    )
    allow_presence_for_anonymous: bool = Field(
        default=False, description="Let anonymous clients read presence (with a permission above)."
    )

    @field_validator("channel_regex")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise PydanticCustomError(
                "channel_regex", "invalid regular expression: {error}", {"error": str(exc)}
            ) from exc
        return value

    @model_validator(mode="after")
    def _positioning_needs_history(self) -> ChannelOptions:
        if self.history_size:
            return self
        for name in ("force_positioning", "allow_positioning", "force_recovery", "allow_recovery"):
            if getattr(self, name):
                raise PydanticCustomError(
                    "history_required",
                    "{name} needs history: set history_size and history_ttl",
                    {"name": name},
                )
        return self

    @field_validator("history_ttl")
    @classmethod
    def _history_needs_both(cls, value: float, info: ValidationInfo) -> float:
        # Centrifugo (internal/config/validate.go validateChannelOptions): history needs both
        # a size and a TTL, and the TTL has second precision.
        if value != int(value):
            raise PydanticCustomError(
                "history_ttl", "must be a whole number of seconds, got {ttl}", {"ttl": value}
            )
        size = info.data.get("history_size")
        if size is None:  # history_size itself failed validation; that error is reported
            return value
        if size and not value:
            raise PydanticCustomError(
                "history_ttl",
                "must be set when history_size is set ({size}): history needs both",
                {"size": size},
            )
        if value and not size:
            raise PydanticCustomError(
                "history_ttl",
                "is set but history_size is 0: history needs both",
            )
        return value


class Namespace(ChannelOptions):
    """One ``channel.namespaces`` entry: channel options for channels named ``<name>:...``."""

    name: str = Field(
        pattern=NAMESPACE_NAME_PATTERN,
        description=(
            "Namespace name: letters, digits, '-', '_' or '.', at least 2 characters. Channels "
            "named `<name>:...` (with the default channel.namespace_boundary) use this "
            "namespace's options."
        ),
    )


class ChannelSettings(_Section):
    """``channel``: channel names and per-namespace options."""

    without_namespace: ChannelOptions = Field(
        default=ChannelOptions(),
        description="Options for channels without a namespace (no namespace boundary in the name).",
    )
    namespaces: list[Namespace] = Field(
        default_factory=list,
        description=(
            "Channel namespaces, each an object with a name and channel options. A channel in "
            "a namespace that is not listed is refused (code 102, unknown channel)."
        ),
    )
    max_length: int = Field(default=255, ge=1, description="Maximum length of a channel name.")
    private_prefix: str = Field(
        default="$",
        description=(
            "Channels whose name starts with this prefix are private: clients may not "
            "subscribe to them on their own (subscription tokens come later; server-side "
            "subscriptions still work)."
        ),
    )
    namespace_boundary: str = Field(
        default=":",
        min_length=1,
        description="Separator between the namespace name and the rest of a channel name.",
    )
    history_meta_ttl: Duration = Field(
        default=30 * 24 * 3600.0,
        gt=0,
        description=(
            "How long a channel's stream position (epoch and offset) is kept after its last "
            "publication. Must not be less than any history_ttl."
        ),
    )

    @field_validator("namespaces")
    @classmethod
    def _unique_names(cls, value: list[Namespace]) -> list[Namespace]:
        seen: set[str] = set()
        for namespace in value:
            if namespace.name in seen:
                raise PydanticCustomError(
                    "duplicate_namespace",
                    'duplicate namespace name "{name}"',
                    {"name": namespace.name},
                )
            seen.add(namespace.name)
        return value

    @field_validator("history_meta_ttl")
    @classmethod
    def _meta_outlives_history(cls, value: float, info: ValidationInfo) -> float:
        groups: list[tuple[str, ChannelOptions]] = []
        if isinstance(options := info.data.get("without_namespace"), ChannelOptions):
            groups.append(("channel.without_namespace", options))
        groups += [(f'namespace "{ns.name}"', ns) for ns in info.data.get("namespaces") or ()]
        for where, group in groups:
            if group.history_ttl > value:
                raise PydanticCustomError(
                    "history_meta_ttl",
                    "must not be less than the history_ttl of {where} ({ttl})",
                    {"where": where, "ttl": format_duration(group.history_ttl)},
                )
        return value


class WebSocketSettings(_Section):
    """``websocket``: the bidirectional WebSocket transport."""

    message_size_limit: int = Field(
        default=65536,
        ge=1,
        description=(
            "Maximum size in bytes of a message received from a WebSocket client; larger "
            "messages close the connection (close code 1009)."
        ),
    )
    write_timeout: Duration = Field(
        default=1.0,
        gt=0,
        description=(
            "How long one write to a WebSocket connection may take before the client is "
            "disconnected."
        ),
    )


class ShutdownSettings(_Section):
    """``shutdown``: graceful shutdown."""

    timeout: Duration = Field(
        default=30.0,
        gt=0,
        description=(
            "Maximum time to drain connections on SIGINT or SIGTERM before exiting anyway."
        ),
    )


class HealthSettings(_Section):
    """``health``: the ``/health`` endpoint."""

    enabled: bool = Field(
        default=True,
        description=(
            "Serve GET /health (liveness and broker reachability). On by default in Squall; "
            "Centrifugo's default is off."
        ),
    )


class PrometheusSettings(_Section):
    """``prometheus``: the ``/metrics`` endpoint."""

    enabled: bool = Field(
        default=True,
        description=(
            "Serve Prometheus metrics at GET /metrics. On by default in Squall; Centrifugo's "
            "default is off."
        ),
    )


_EXPLICIT_ONLY: ContextVar[bool] = ContextVar("squall_config_explicit_only", default=False)


class Settings(BaseSettings):
    """Every Squall option. Sections and names follow Centrifugo v6 where the concept is the same.

    ``Settings(**values)`` validates ``values`` over ``SQUALL_*`` environment variables
    (pydantic-settings' own layering). Servers and the CLI use :func:`load_settings`, which adds
    the config file, reports unknown keys and names the source of each bad value. Instances are
    immutable; derive changed ones with ``model_copy(update=...)`` or by loading again.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    http_server: HTTPServerSettings = Field(
        default=HTTPServerSettings(), description="HTTP server."
    )
    log: LogSettings = Field(default=LogSettings(), description="Logging.")
    http_api: HTTPAPISettings = Field(default=HTTPAPISettings(), description="Server HTTP API.")
    client: ClientSettings = Field(default=ClientSettings(), description="Client connections.")
    channel: ChannelSettings = Field(default=ChannelSettings(), description="Channels.")
    websocket: WebSocketSettings = Field(
        default=WebSocketSettings(), description="WebSocket transport."
    )
    shutdown: ShutdownSettings = Field(default=ShutdownSettings(), description="Graceful shutdown.")
    health: HealthSettings = Field(default=HealthSettings(), description="Health endpoint.")
    prometheus: PrometheusSettings = Field(
        default=PrometheusSettings(), description="Prometheus metrics endpoint."
    )
    development: bool = Field(
        default=False,
        description=(
            'Squall only. Development mode: serve a demo page at "/" and a token endpoint that '
            "mints a connection JWT for anyone who asks. Allowed only on a loopback "
            "http_server.address.\n\n"
            ".. warning:: The token endpoint lets any visitor connect as any user; never turn "
            "this on for a server others can reach."
        ),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Values given to the constructor, then ``SQUALL_*`` variables; no dotenv, no secrets
        dir. Inside :func:`load_settings` only the given values: it has layered them already."""
        if _EXPLICIT_ONLY.get():
            return (init_settings,)
        return (init_settings, env_settings)


# --------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class LoadedSettings:
    """The result of :func:`load_settings`.

    ``unknown_keys`` are dotted paths present in the file or the environment that match no
    option (``"client.foo"``, ``"nope"``, ``"channel.namespaces[0].colour"``), in the order
    found; ``unknown_key_sources`` maps each to where it came from (the file path as given, or
    the environment variable's name). Callers log them as warnings: they are not errors.
    """

    settings: Settings
    unknown_keys: list[str] = field(default_factory=list)
    unknown_key_sources: Mapping[str, str] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        """One line per unknown key, as Centrifugo logs them: ``unknown option client.foo in
        squall.json``."""
        return [
            f"unknown option {key} in {self.unknown_key_sources.get(key, 'configuration')}"
            for key in self.unknown_keys
        ]


OVERRIDES_SOURCE: Final = "overrides"


def env_var_name(path: str) -> str:
    """The environment variable that sets the option at dotted ``path``:
    ``"http_api.key" -> "SQUALL_HTTP_API__KEY"``."""
    return ENV_PREFIX + path.upper().replace(".", ENV_NESTED_DELIMITER)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Load settings from ``path`` (JSON, YAML or TOML by extension; ``None``: no file), the
    ``SQUALL_*`` variables in ``env`` (default ``os.environ``) and ``overrides``.

    ``overrides`` maps dotted option paths to values (``{"http_server.port": 9000}``); ``None``
    values are skipped, so a CLI can pass its flags unfiltered. A path naming no option is a
    ``ConfigError``: overrides come from code, not users.

    Raises :class:`~squall.errors.ConfigError` when the file cannot be read or parsed, or any
    value is invalid. Its message has one line per problem, naming the option by its dotted path
    and its source: ``client.ping_interval: invalid duration "abc" (from squall.json)``. Secret
    values are never echoed.
    """
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    unknown: dict[str, str] = {}

    if path is not None:
        label = os.fspath(path)
        data = _read_file(Path(label), label)
        for key in _unknown_keys(Settings, data, ""):
            unknown.setdefault(key, label)
        _merge(merged, data)
        _record_sources(sources, data, "", label)

    for name, raw in sorted((os.environ if env is None else env).items()):
        if not name.upper().startswith(ENV_PREFIX) or raw == "":
            continue
        parts = name[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER)
        dotted = ".".join(parts)
        option = _field_at(parts)
        if option is None:
            unknown.setdefault(dotted, name)
            continue
        value: Any = raw
        section = _model_of(option.annotation)
        if section is not None or get_origin(option.annotation) in (list, dict):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{dotted}: invalid JSON: {exc.msg} (from {name})") from exc
            if section is not None and isinstance(value, dict):
                found = _unknown_keys(section, value, dotted)
            elif (item := _list_item_model(option.annotation)) and isinstance(value, list):
                found = _unknown_items(item, value, dotted)
            else:
                found = iter(())
            for key in found:
                unknown.setdefault(key, name)
        _set_path(merged, parts, value)
        _attribute(sources, dotted, value, name)

    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        parts = dotted.split(".")
        if _field_at(parts) is None:
            raise ConfigError(f"{dotted}: no such option (from {OVERRIDES_SOURCE})")
        _set_path(merged, parts, value)
        _attribute(sources, dotted, value, OVERRIDES_SOURCE)

    token = _EXPLICIT_ONLY.set(True)
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, sources)) from None
    finally:
        _EXPLICIT_ONLY.reset(token)
    return LoadedSettings(settings, list(unknown), dict(unknown))


def _read_file(path: Path, label: str) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml", ".toml"):
        raise ConfigError(
            f"{label}: unsupported config file extension {suffix!r} "
            "(use .json, .yaml, .yml or .toml)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read config file: {exc}") from None
    data: object
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{label}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: invalid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML: {exc}") from None
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: the top level must be an object, not {type(data).__name__}")
    return _stringify_keys(data)


def _stringify_keys(data: dict[Any, Any]) -> dict[str, Any]:
    # YAML allows non-string keys; option names are strings.
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = _stringify_keys(value)
        elif isinstance(value, list):
            value = [_stringify_keys(v) if isinstance(v, dict) else v for v in value]
        out[str(key)] = value
    return out


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return _model_of(item)
    return None


def _field_at(parts: list[str]) -> FieldInfo | None:
    """The option at ``parts`` (a section, a list or a leaf), or ``None`` if there is none."""
    model: type[BaseModel] | None = Settings
    info: FieldInfo | None = None
    for part in parts:
        info = model.model_fields.get(part) if model is not None else None
        if info is None:
            return None
        model = _model_of(info.annotation)
    return info


def _unknown_keys(model: type[BaseModel], data: Mapping[str, Any], prefix: str) -> Iterator[str]:
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        info = model.model_fields.get(key)
        if info is None:
            yield dotted
            continue
        sub = _model_of(info.annotation)
        if sub is not None and isinstance(value, dict):
            yield from _unknown_keys(sub, value, dotted)
        elif (item := _list_item_model(info.annotation)) and isinstance(value, list):
            yield from _unknown_items(item, value, dotted)


def _unknown_items(model: type[BaseModel], items: list[Any], prefix: str) -> Iterator[str]:
    for i, entry in enumerate(items):
        if isinstance(entry, dict):
            yield from _unknown_keys(model, entry, f"{prefix}[{i}]")


def _merge(into: dict[str, Any], data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _set_path(into: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        child = into.get(part)
        if not isinstance(child, dict):
            child = into[part] = {}
        into = child
    if isinstance(value, dict) and isinstance(into.get(parts[-1]), dict):
        _merge(into[parts[-1]], value)
    else:
        into[parts[-1]] = value


def _record_sources(
    sources: dict[str, str], data: Mapping[str, Any], prefix: str, src: str
) -> None:
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            _record_sources(sources, value, dotted, src)
        else:
            sources[dotted] = src


def _attribute(sources: dict[str, str], dotted: str, value: Any, src: str) -> None:
    # A section given as an object is merged into earlier sources, so only its leaves change
    # hands; a scalar or list replaces whatever was below it.
    if isinstance(value, dict):
        _record_sources(sources, value, dotted, src)
        return
    for key in [k for k in sources if k.startswith((dotted + ".", dotted + "["))]:
        del sources[key]
    sources[dotted] = src


def _loc_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _source_of(loc: tuple[int | str, ...], sources: Mapping[str, str]) -> str:
    for end in range(len(loc), 0, -1):
        found = sources.get(_loc_path(loc[:end]))
        if found is not None:
            return found
    # A default value that is invalid next to a configured sibling (history_ttl missing while
    # history_size is set): blame the sibling's source.
    for end in range(len(loc) - 1, 0, -1):
        parent = _loc_path(loc[:end])
        for key, src in sources.items():
            if key.startswith(parent + ".") or key.startswith(parent + "["):
                return src
    return "defaults"


_SECRET_WORDS: Final = ("key", "secret", "password", "token")
# Our own error types quote the bad value already; pydantic's do not.
_OWN_ERRORS: Final = frozenset({"duration", "pong_timeout", "history_ttl", "history_meta_ttl"})


def _format_errors(exc: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        dotted = _loc_path(loc) or "(top level)"
        msg = error["msg"]
        if error["type"] == "value_error" and msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if msg[:1].isupper() and not msg[1:2].isupper():
            msg = msg[0].lower() + msg[1:]
        value = error.get("input")
        secret = any(word in str(part) for part in loc for word in _SECRET_WORDS)
        if (
            error["type"] not in _OWN_ERRORS
            and not secret
            and isinstance(value, str | int | float | bool)
        ):
            msg += f", got {json.dumps(value)[:80]}"
        lines.append(f"{dotted}: {msg} (from {_source_of(loc, sources)})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Generated configs and listen safety


def generate_config(*, development: bool) -> dict[str, Any]:
    """A starter config with fresh random secrets for ``client.token.hmac_secret_key`` and
    ``http_api.key``, like ``centrifugo genconfig``. Write it with mode 0600: it holds secrets.

    With ``development=True`` it also turns on development mode, allows browser origins on
    localhost and 127.0.0.1 at any port, and opens the channels without a namespace to
    authenticated clients (subscribe, publish when subscribed, history, presence, join/leave)
    so the demo page works.
    """
    config: dict[str, Any] = {
        "client": {
            "token": {"hmac_secret_key": secrets.token_urlsafe(32)},
            "allowed_origins": [],
        },
        "http_api": {"key": secrets.token_urlsafe(32)},
    }
    if development:
        config["development"] = True
        config["client"]["allowed_origins"] = [
            "http://localhost:*",
            "http://127.0.0.1:*",
        ]
        config["channel"] = {
            "without_namespace": {
                "presence": True,
                "join_leave": True,
                "force_push_join_leave": True,
                "history_size": 100,
                "history_ttl": "300s",
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_history_for_subscriber": True,
                "allow_presence_for_subscriber": True,
            }
        }
    return config


def is_loopback(address: str) -> bool:
    """Whether binding to ``address`` listens on loopback only (``""`` means every interface)."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_safety(settings: Settings) -> None:
    """Refuse settings that would expose an unprotected server.

    On a non-loopback ``http_server.address`` both ``client.token.hmac_secret_key`` and
    ``http_api.key`` must be set (the key may be omitted with ``http_api.insecure``), and
    ``development`` must be off. Raises :class:`~squall.errors.ConfigError` listing every
    problem; returns ``None`` when the settings are safe to serve.
    """
    address = settings.http_server.address
    if is_loopback(address):
        return
    shown = f'"{address}"' if address else '"" (every interface)'
    problems = []
    if settings.development:
        problems.append(
            "development: development mode serves a token endpoint for anyone and is only "
            f"allowed on a loopback address, but http_server.address is {shown}"
        )
    if not settings.client.token.hmac_secret_key:
        problems.append(
            f"client.token.hmac_secret_key: must be set when http_server.address is {shown} "
            "(`squall genconfig` generates one)"
        )
    if not settings.http_api.key and not settings.http_api.insecure:
        problems.append(
            f"http_api.key: must be set when http_server.address is {shown} "
            "(or set http_api.insecure to serve the API without a key)"
        )
    if problems:
        raise ConfigError("\n".join(problems))

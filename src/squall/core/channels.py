"""Channel names and the options that apply to each.

A channel ``ns:rest`` belongs to namespace ``ns`` (the part before the first ``:``); a channel
without ``:`` uses ``channel.without_namespace``. A namespace that is not configured makes the
channel unknown (error 102), as in Centrifugo.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from squall.core.broker import HistoryOptions
from squall.core.patterns import is_pattern, matches, valid_pattern
from squall.errors import ReplyError
from squall.types import Channel, Publication

if TYPE_CHECKING:
    from squall.config import ChannelOptions, Settings

__all__ = ["ChannelRules"]


class ChannelRules:
    """Resolves a channel name to its options, once per name (cached)."""

    def __init__(self, settings: Settings) -> None:
        channel = settings.channel
        self._default: ChannelOptions = channel.without_namespace
        self._namespaces: dict[str, ChannelOptions] = {ns.name: ns for ns in channel.namespaces}
        self._max_length: int = channel.max_length
        self._boundary: str = channel.namespace_boundary
        self._cache: dict[str, ChannelOptions] = {}
        self._regex: dict[str, re.Pattern[str]] = {}
        self._history_meta_ttl: float = channel.history_meta_ttl

    def options(self, channel: str) -> ChannelOptions:
        """The options of ``channel``; raises ReplyError 107 for an empty or too long name,
        102 for an unknown namespace."""
        opts = self._cache.get(channel)
        if opts is not None:
            return opts
        if not channel or len(channel) > self._max_length:
            raise ReplyError.bad_request()
        ns, sep, _ = channel.partition(self._boundary)
        if not sep:
            opts = self._default
        else:
            found = self._namespaces.get(ns)
            if found is None:
                raise ReplyError.unknown_channel()
            opts = found
        if len(self._cache) < 100_000:
            self._cache[channel] = opts
        return opts

    def valid_for_client(self, channel: str, opts: ChannelOptions) -> bool:
        """A client-side subscription's name check: the namespace's ``channel_regex`` on the
        part after the namespace prefix, else ASCII only (Centrifugo's validChannelName)."""
        if opts.channel_regex:
            pattern = self._regex.get(opts.channel_regex)
            if pattern is None:
                pattern = self._regex[opts.channel_regex] = re.compile(opts.channel_regex)
            _, sep, rest = channel.partition(self._boundary)
            return pattern.search(rest if sep else channel) is not None
        return channel.isascii()

    def split(self, channel: str) -> tuple[str, str]:
        """``(prefix, rest)``: the namespace prefix with its boundary ("" without a
        namespace) and the name after it."""
        ns, sep, rest = channel.partition(self._boundary)
        return (ns + sep, rest) if sep else ("", channel)

    def stream_key(self, channel: str) -> Channel:
        """The broker channel that carries ``channel``'s publications and history: the
        namespace prefix alone for pattern namespaces (one stream for all their channels),
        else the channel itself."""
        opts = self.options(channel)
        if opts.allow_patterns:
            return Channel(self.split(channel)[0])
        return Channel(channel)

    def pattern(self, channel: str, opts: ChannelOptions) -> str | None:
        """The name part of ``channel`` if it is a pattern subscription, else None; raises
        ReplyError 107 for a malformed pattern."""
        if not opts.allow_patterns:
            return None
        rest = self.split(channel)[1]
        if not is_pattern(rest, opts.pattern_separator):
            return None
        if not valid_pattern(rest, opts.pattern_separator):
            raise ReplyError.bad_request()
        return rest

    def selects(self, channel: str) -> Callable[[Publication], bool] | None:
        """For a channel in a pattern namespace, which publications of the namespace stream
        belong to it (its own, or the pattern's matches); None for ordinary channels."""
        opts = self.options(channel)
        if not opts.allow_patterns:
            return None
        pattern = self.pattern(channel, opts)
        if pattern is None:
            return lambda pub: pub.channel == channel
        separator = opts.pattern_separator
        return lambda pub: matches(pattern, self.split(pub.channel)[1], separator)

    def history(self, channel: Channel) -> HistoryOptions | None:
        """History settings for publishing to ``channel`` (None: no history)."""
        opts = self.options(channel)
        if opts.history_size > 0 and opts.history_ttl > 0:
            return HistoryOptions(opts.history_size, opts.history_ttl, self._history_meta_ttl)
        return None

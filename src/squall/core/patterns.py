"""Pattern subscriptions over hierarchical channel names.

In a namespace with ``allow_patterns``, the part of a channel name after the namespace prefix
is a list of segments (``station.a.news`` with the separator ``.``). A pattern is a name whose
segments may be ``*`` (exactly one segment) or, as the last segment, ``>`` (one or more
segments), as NATS subjects are.

Cost model: publishing to a concrete channel walks :class:`PatternIndex`, a trie of the
subscribed patterns, once: at each level it follows the literal segment, ``*`` and ``>``, so
the work is bounded by the name's depth times the wildcard branches actually subscribed, never
by the number of patterns or subscribers. Then each matching pattern's subscribers get one
shared encoding (the hub's broadcast). So fan-out stays O(matching subscribers).
"""

from __future__ import annotations

__all__ = ["PatternIndex", "is_pattern", "matches", "valid_pattern"]

ONE = "*"
REST = ">"


def is_pattern(rest: str, separator: str) -> bool:
    """Whether the name part ``rest`` has a wildcard segment."""
    return any(seg in (ONE, REST) for seg in rest.split(separator))


def valid_pattern(rest: str, separator: str) -> bool:
    """Segments are non-empty and ``>`` is only last."""
    segments = rest.split(separator)
    if any(not seg for seg in segments):
        return False
    return REST not in segments[:-1]


def matches(pattern: str, name: str, separator: str) -> bool:
    """Whether the concrete name part ``name`` matches the pattern part ``pattern``."""
    pat = pattern.split(separator)
    segs = name.split(separator)
    for i, p in enumerate(pat):
        if p == REST:
            return len(segs) > i
        if i >= len(segs) or (p != ONE and p != segs[i]):
            return False
    return len(segs) == len(pat)


class _Node:
    __slots__ = ("children", "patterns")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.patterns: set[str] = set()


class PatternIndex:
    """The subscribed patterns of one namespace, as a trie over segments."""

    def __init__(self, separator: str) -> None:
        self.separator = separator
        self._root = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, key: str, rest: str) -> None:
        """Index pattern ``rest`` (the part after the prefix) under ``key`` (the full name)."""
        node = self._root
        for seg in rest.split(self.separator):
            node = node.children.setdefault(seg, _Node())
        if key not in node.patterns:
            node.patterns.add(key)
            self._count += 1

    def remove(self, key: str, rest: str) -> None:
        path = [self._root]
        segments = rest.split(self.separator)
        for seg in segments:
            child = path[-1].children.get(seg)
            if child is None:
                return
            path.append(child)
        if key in path[-1].patterns:
            path[-1].patterns.discard(key)
            self._count -= 1
        for i in range(len(segments), 0, -1):  # prune empty branches
            node = path[i]
            if node.patterns or node.children:
                break
            del path[i - 1].children[segments[i - 1]]

    def match(self, name: str) -> list[str]:
        """The keys of every pattern matching the concrete name part ``name``."""
        segs = name.split(self.separator)
        found: list[str] = []
        stack = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            rest = node.children.get(REST)
            if rest is not None and i < len(segs):
                found.extend(rest.patterns)
            if i == len(segs):
                found.extend(node.patterns)
                continue
            child = node.children.get(segs[i])
            if child is not None:
                stack.append((child, i + 1))
            one = node.children.get(ONE)
            if one is not None:
                stack.append((one, i + 1))
        return found

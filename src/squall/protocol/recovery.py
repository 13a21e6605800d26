"""Recovery decisions: which publications a resubscribing client gets, and whether that makes
its stream whole. Pure functions over publications and positions (no I/O).

The rule (docs/server/history_and_recovery.md, "The recovery decision"): recovery succeeds
only when the client's epoch is the stream's and every publication after its offset up to the
top is still held, and there are no more of them than the configured limit. Never partial:
otherwise the client gets none of them and ``recovered: false``.

:func:`merge` joins the recovered publications with those that arrived while the history was
being read (buffered for the subscribing session), keeping offset order and dropping
duplicates, so the client continues exactly after the last publication it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

from squall.types import Publication, StreamPosition

__all__ = ["cache_recovered", "merge", "stream_recovered"]


def stream_recovered(
    pubs: Sequence[Publication], top: StreamPosition, since: StreamPosition, limit: int
) -> tuple[list[Publication], bool]:
    """``pubs``: the stream's publications after ``since.offset`` (oldest first, at most
    ``limit + 1`` of them); ``top``: the stream's position when they were read.

    Returns the publications to deliver and whether the recovery is complete.
    """
    if since.epoch != top.epoch:
        return [], False
    if not pubs:
        return [], top.offset == since.offset
    if len(pubs) > limit:
        return [], False
    complete = pubs[0].offset == since.offset + 1 and pubs[-1].offset == top.offset
    return (list(pubs), True) if complete else ([], False)


def cache_recovered(
    latest: Publication | None, top: StreamPosition, since: StreamPosition
) -> tuple[list[Publication], bool]:
    """Cache mode (docs/server/cache_recovery.md): the client needs only the latest
    publication. It is recovered when it already holds it, or when the latest publication is
    still held (it is then delivered)."""
    same_state = since.offset > 0 and since.offset == top.offset and since.epoch == top.epoch
    if latest is None:
        return [], same_state
    if latest.offset != top.offset:
        return [], False
    return ([], True) if same_state else ([latest], True)


def merge(
    recovered: Sequence[Publication],
    buffered: Sequence[Publication],
    top_offset: int,
    *,
    contiguous: bool = True,
) -> tuple[list[Publication], int, bool]:
    """Append to ``recovered`` the buffered publications that come after it, in offset order.

    ``top_offset`` is the stream top when the history was read: buffered publications at or
    below it are already covered (delivered in ``recovered`` or known to the client). Returns
    the publications to deliver, the offset the client is at after them, and False when the
    buffered publications skip an offset (the broker lost one: the client must recover).
    ``contiguous=False`` for subscriptions that see only part of a stream (channels and
    patterns of a pattern namespace), where offsets legitimately skip.
    """
    out = list(recovered)
    last = max(top_offset, out[-1].offset if out else 0)
    for pub in sorted(buffered, key=lambda p: p.offset):
        if pub.offset <= last:
            continue
        if contiguous and pub.offset != last + 1:
            return out, last, False
        out.append(pub)
        last = pub.offset
    return out, last, True

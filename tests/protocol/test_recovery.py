"""Recovery decisions, without I/O: never partial, never duplicated."""

from __future__ import annotations

from squall.protocol.recovery import cache_recovered, merge, stream_recovered
from squall.types import Epoch, Publication, RawJSON, StreamPosition

E = Epoch("e1")


def pubs(*offsets: int) -> list[Publication]:
    return [Publication(RawJSON(b"%d" % o), offset=o) for o in offsets]


def offsets(items: list[Publication]) -> list[int]:
    return [p.offset for p in items]


def test_stream_recovers_the_whole_gap() -> None:
    got, ok = stream_recovered(pubs(4, 5, 6), StreamPosition(6, E), StreamPosition(3, E), 10)
    assert ok
    assert offsets(got) == [4, 5, 6]


def test_stream_at_top_recovers_nothing_successfully() -> None:
    assert stream_recovered([], StreamPosition(6, E), StreamPosition(6, E), 10) == ([], True)


def test_stream_with_a_hole_at_the_start_is_not_recovered() -> None:
    # Publication 4 expired from history: partial recovery is never given.
    assert stream_recovered(pubs(5, 6), StreamPosition(6, E), StreamPosition(3, E), 10) == (
        [],
        False,
    )


def test_stream_empty_history_behind_the_top_is_not_recovered() -> None:
    assert stream_recovered([], StreamPosition(9, E), StreamPosition(3, E), 10) == ([], False)


def test_stream_other_epoch_is_not_recovered() -> None:
    got = stream_recovered(pubs(4), StreamPosition(4, E), StreamPosition(3, Epoch("old")), 10)
    assert got == ([], False)


def test_stream_over_the_limit_is_not_recovered() -> None:
    missed = pubs(4, 5, 6)
    assert stream_recovered(missed, StreamPosition(9, E), StreamPosition(3, E), 2) == ([], False)


def test_cache_delivers_only_the_latest() -> None:
    got, ok = cache_recovered(pubs(9)[0], StreamPosition(9, E), StreamPosition(3, E))
    assert ok
    assert offsets(got) == [9]


def test_cache_client_already_current_gets_nothing() -> None:
    assert cache_recovered(pubs(9)[0], StreamPosition(9, E), StreamPosition(9, E)) == ([], True)


def test_cache_without_any_publication() -> None:
    assert cache_recovered(None, StreamPosition(0, E), StreamPosition(0, E)) == ([], False)


def test_merge_appends_only_what_follows() -> None:
    merged, last, whole = merge(pubs(4, 5), pubs(5, 6, 7), 5)
    assert offsets(merged) == [4, 5, 6, 7]
    assert last == 7
    assert whole


def test_merge_skips_buffered_below_the_top() -> None:
    merged, last, whole = merge([], pubs(3, 4, 5, 6), 5)
    assert offsets(merged) == [6]
    assert last == 6
    assert whole


def test_merge_orders_buffered_by_offset() -> None:
    merged, _, whole = merge([], pubs(8, 6, 7), 5)
    assert offsets(merged) == [6, 7, 8]
    assert whole


def test_merge_reports_a_gap_in_buffered() -> None:
    _, _, whole = merge([], pubs(6, 8), 5)
    assert not whole

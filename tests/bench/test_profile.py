"""Reading py-spy's raw format for ``python -m bench profile`` (no server, no py-spy)."""

from __future__ import annotations

from bench.profile import parse_raw

RAW = """\
<module> (<string>:1);run (squall/app.py:198);Hub.flush (squall/core/hub.py:285) 60
<module> (<string>:1);run (squall/app.py:198);_publish (c.py:5);Node.publish (n.py:2) 30
<module> (<string>:1);run (squall/app.py:198) 10

"""


def test_self_and_inclusive_shares() -> None:
    prof = parse_raw(RAW.splitlines())
    assert prof.total == 100
    assert prof.top(1) == [(0.6, "Hub.flush (squall/core/hub.py:285)")]
    assert dict((f, s) for s, f in prof.top(10))["run (squall/app.py:198)"] == 0.1
    inclusive = dict((f, s) for s, f in prof.top(10, inclusive=True))
    assert inclusive["run (squall/app.py:198)"] == 1.0
    assert inclusive["_publish (c.py:5)"] == 0.3

"""The runner's arithmetic and RESULTS.md: offered loads per scenario, which servers run
which scenario, and n/a rows for peers that cannot do one. No servers, no generator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import matrix, report
from bench.servers import SERVERS, RunningServer


def test_channels_level_offers_the_asked_deliveries() -> None:
    # N=1000 on 100 channels of 10: r msgs/s per client -> 1000 * r * 10 deliveries/s.
    args = matrix._level_args("channels", 1000, 200_000.0)
    assert args[:2] == ["--rooms", "100"]
    assert float(args[args.index("--rate") + 1]) * 1000 * 10 == 200_000.0


def test_large_n_spreads_clients_over_source_addresses() -> None:
    # One address holds ~28k connections to one port (32768-60999 less a margin).
    assert matrix.source_args(20_000, "32768\t60999") == []
    assert matrix.source_args(50_000, "32768\t60999") == ["--src", "127.0.0.1,127.0.0.2"]
    assert matrix.source_args(100_000, "32768 60999")[1].count(",") == 3
    assert matrix.per_source("not a range") == 60999 - 32768 + 1 - 1000


def test_load_args_are_the_same_for_the_matrix_and_the_profiler(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    server = RunningServer(SERVERS["squall"], process, 8000, tmp_path / "log")
    storm = matrix.load_args(server, "storm", 1000)
    assert storm[storm.index("--storm-inflight") + 1] == str(matrix.STORM_INFLIGHT)
    assert "--clients" not in storm  # the storm's load is its connections in flight
    idle = matrix.load_args(server, "idle", 200_000)
    assert idle[idle.index("--rate") + 1] == "0"
    assert "--src" in idle  # more clients than one source address holds
    channels = matrix.load_args(server, "channels", 1000, 200_000.0)
    assert channels[-4:] == matrix._level_args("channels", 1000, 200_000.0)


def test_scenarios_follow_what_each_server_does() -> None:
    config = matrix.MatrixConfig(servers=list(SERVERS), clients=[1000, 5000])
    squall = matrix.scenarios_for(SERVERS["squall"], config, 1000)
    assert squall == list(matrix.SCENARIOS)
    assert "storm" not in matrix.scenarios_for(SERVERS["squall"], config, 5000)  # once a run
    assert "xhr_streaming" not in matrix.scenarios_for(SERVERS["node-ws"], config, 1000)
    assert "xhr_streaming" in matrix.scenarios_for(SERVERS["node-sockjs"], config, 1000)
    assert "channels" not in matrix.scenarios_for(SERVERS["sockjs-tornado"], config, 1000)


def test_full_mode_measures_only_the_bounding_servers_beyond_the_first_n() -> None:
    config = matrix.MatrixConfig(
        servers=list(SERVERS),
        clients=[1000, 5000],
        large_servers=matrix.BOUNDING_SERVERS,
        large_scenarios=matrix.LARGE_N_SCENARIOS,
    )
    first = matrix.scenarios_for(SERVERS["python-socketio"], config, 1000)
    assert first == ["idle", "broadcast", "fanout"]
    assert matrix.scenarios_for(SERVERS["python-socketio"], config, 5000) == []
    assert matrix.scenarios_for(SERVERS["squall"], config, 5000) == ["idle", "broadcast"]
    assert len(matrix.scenarios_for(SERVERS["squall"], config, 1000)) == len(matrix.SCENARIOS)


def test_results_say_na_for_a_peer_without_the_scenario(tmp_path: Path) -> None:
    knees = [
        matrix.Knee("squall", "xhr_streaming", 1000, 0, knee=50_000.0, peak=60_000.0),
        matrix.Knee("node-sockjs", "xhr_streaming", 1000, 0, knee=25_000.0, peak=30_000.0),
        matrix.Knee("squall", "storm", matrix.STORM_INFLIGHT, 0, knee=4000.0, peak=4000.0),
        matrix.Knee("raw-uvloop", "storm", matrix.STORM_INFLIGHT, 0, knee=8000.0, failures=2),
    ]
    rows = matrix.summarize(knees)
    out = tmp_path / "RESULTS.md"
    report.write_results(
        out,
        command="python -m bench matrix",
        rows=rows,
        versions={},
        descriptions={name: SERVERS[name].description for name in SERVERS},
        plot_name=None,
    )
    text = out.read_text()
    assert "| 1000 | raw-uvloop |" + " n/a |" * 13 in text
    assert f"| {matrix.STORM_INFLIGHT} | node-sockjs |" + " n/a |" * 10 in text
    assert "| 2.00 | 2.00 |" in text  # squall / node-sockjs, knee
    assert "| 8,000 |" in text  # storm: connects/s
    assert "| 0.50 | 0.50 |" in text  # squall / raw-uvloop, connects/s


def test_results_leave_out_servers_not_measured_at_an_n_and_show_no_knee(
    tmp_path: Path,
) -> None:
    knees = [
        matrix.Knee("squall", "broadcast", 1000, 0, knee=5e6, peak=6e6),
        matrix.Knee("aiohttp", "broadcast", 1000, 0, knee=1e5, peak=1.2e5),
        matrix.Knee("squall", "broadcast", 10000, 0, knee=9e4, peak=5e6),
        matrix.Knee("node-ws", "broadcast", 10000, 0, knee=0.0, peak=9e4),  # no level < 100 ms
    ]
    out = tmp_path / "RESULTS.md"
    report.write_results(
        out,
        command="python -m bench matrix",
        rows=matrix.summarize(knees),
        versions={},
        descriptions={},
        plot_name=None,
    )
    text = out.read_text()
    assert "| 1000 | node-ws |" not in text  # measured at 10000 only: not n/a at 1000
    assert "| 10000 | aiohttp |" not in text  # measured at 1000 only
    assert "| 1000 | aiohttp | 1 | 100,000 |" in text
    node_ws = next(line for line in text.splitlines() if line.startswith("| 10000 | node-ws |"))
    cells = [c.strip() for c in node_ws.split("|")[1:-1]]
    assert cells[3] == "-"  # knee
    assert cells[11] == "-"  # squall / node-ws (knee): no ratio, not 0.00
    assert cells[13] == "55.56"  # squall / node-ws (peak)


def _level(offered: float, delivered: float, p99: float, *, ok: bool = True) -> matrix.Level:
    return matrix.Level(offered, {"delivered_per_s": delivered, "p99_ms": p99}, ok=ok)


def test_p99_below_the_knee_is_the_worst_passing_level_up_to_80_percent() -> None:
    knee = matrix.Knee("squall", "broadcast", 1000, 0, knee=1000.0)
    knee.levels = [
        matrix.Level(5000.0, {"delivered_per_s": 1200.0, "p99_ms": 900.0}, ok=False, probe=True),
        _level(400.0, 400.0, 20.0),
        _level(700.0, 700.0, 45.0),
        _level(800.0, 800.0, 30.0),
        _level(900.0, 900.0, 95.0),  # above 80% of the knee: not "below"
        _level(1000.0, 1000.0, 99.0),
        _level(1100.0, 1050.0, 140.0, ok=False),
    ]
    assert knee.p99_below_ms == 45.0
    row = matrix.summarize([knee])[0]
    assert row["p99_below_ms"] == 45.0
    assert matrix.Knee("squall", "broadcast", 1000, 0).p99_below_ms == -1.0

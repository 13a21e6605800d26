"""Scenarios, the knee search and the paired runs behind ``python -m bench matrix``.

A *run* measures every selected server once at one N, one after the other, on the same
machine within a minute or two; ratios are only ever taken between servers of the same run
(this machine is noisy: numbers from different runs are never compared). A run is repeated
``repeats`` times; the report gives medians of the values and of the per-run ratios.

Scenarios (``SCENARIOS``; a server that cannot do one is left out of it, and the report says
n/a):

- ``idle``: server RSS per connected (and subscribed) client.
- ``broadcast``: N clients each publishing into one room; every message goes to all N.
- ``fanout``: server API publications (``POST /api/publish``) to N WebSocket subscribers.
- ``channels``: N clients on N/10 channels (:data:`CHANNEL_SIZE` each), each publishing
  into its own; every message goes to the 10 members of its channel.
- ``sse`` and ``xhr_streaming``: fan-out as above to N readers on Server-Sent Events or on
  SockJS xhr-streaming.
- ``storm``: WebSocket connects/s with a JWT verified per connection, :data:`STORM_INFLIGHT`
  in flight, at full speed (one level, no knee; once per run, at the first N).

The knee of a server (the scenarios that deliver messages): the generator first offers far
more than any server delivers, for a short while, to find the peak delivered messages/s; then
it offers fractions of that peak, from low to high, and stops at the first level whose p99
latency reaches :data:`P99_LIMIT_MS` or that loses messages (twice in a row: a level that
fails is measured once more, so one latency spike does not end the ramp). When the probe
underestimated the server, the ramp keeps climbing past the peak while latency holds. The knee
is the highest delivered messages/s among the levels that stayed under the limit.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.servers import SERVERS, RunningServer, ServerSpec, start

__all__ = [
    "BOUNDING_SERVERS",
    "CHANNEL_SIZE",
    "LARGE_N_SCENARIOS",
    "P99_LIMIT_MS",
    "QUICK_SCENARIOS",
    "SCENARIOS",
    "STORM_INFLIGHT",
    "Knee",
    "Level",
    "MatrixConfig",
    "knee_from_json",
    "load_args",
    "run_matrix",
    "source_args",
    "summarize",
    "to_json",
]

P99_LIMIT_MS = 100.0
SCENARIOS = ("idle", "broadcast", "fanout", "channels", "sse", "xhr_streaming", "storm")
"""Run in this order on one server process: idle first, on a fresh heap; the storm's churn
of connections last."""
QUICK_SCENARIOS = ("idle", "broadcast", "fanout")
"""What ``--quick`` runs unless ``--scenarios`` names others."""
BOUNDING_SERVERS = ("squall", "raw-uvloop", "raw-uvloop-batched", "node-ws")
"""Full mode measures these beyond the first N: Squall, the two Python ceilings and the Node
peer the targets name. Every other peer is measured at the first N only, which keeps the
full matrix within an hour here."""
LARGE_N_SCENARIOS = ("idle", "broadcast")
"""Full mode's scenarios beyond the first N (the targets' scenarios; the others at the first
N only)."""
CHANNEL_SIZE = 10
"""Scenario channels: clients per channel (N clients on N / CHANNEL_SIZE channels)."""
STORM_INFLIGHT = 200
"""Scenario storm: connections the generator keeps in flight (handshake, connect, close)."""
PROBE_DELIVERIES = 400_000.0
"""Offered deliveries/s of the first saturation probe: above what a server writing each
message to each client reaches on one core here."""
PROBE_MAX = 25_600_000.0
"""The probe is raised 4x at a time, up to this, while a server delivers what is offered."""
KEPT_UP = 0.9
"""Delivered / offered above which a probe did not saturate the server."""
LEVELS = (0.4, 0.6, 0.75, 0.85, 0.95, 1.05)
"""Fractions of the probe's peak offered on the way up."""
BELOW_KNEE = 0.8
"""Levels up to this fraction of the knee count as "below the knee" (RESULTS.md's p99 below
column)."""
MIN_LEVEL = 0.02
"""When even the first level fails, the ramp halves the fraction down to this."""
MAX_LEVEL = 3.0
"""Past the last fraction the ramp climbs by 15% a level while p99 holds, up to this."""
API_CONNS = 64
"""Keep-alive connections the generator publishes through in fan-out, one request in flight
on each: with 8, a server that writes a turn's publications at once (Squall) waited on the
generator's requests, not on its CPU."""
SERVER_CPU = 0
GENERATOR_CPU = 1
DISTURBANCE_LIMIT = 0.15
"""Cores of other work on the server's or the generator's CPU (busy time not spent by them)
above which a measurement may have been disturbed: it is taken again when it also looks
harmed (a level over the latency limit, or a probe whose server did not saturate)."""
ATTEMPTS = 3


@dataclass
class MatrixConfig:
    servers: Sequence[str]
    clients: Sequence[int]
    scenarios: Sequence[str] = SCENARIOS
    repeats: int = 1
    duration: float = 2.0
    warmup: float = 0.5
    probe_duration: float = 2.0
    nice: int = 0
    """Run the server and the generator at this niceness (negative: ahead of other work on
    a shared machine; needs root)."""
    rt: int = 0
    """Run them under SCHED_RR at this priority instead (root): other work then only gets
    the CPU time they leave idle."""
    large_servers: Sequence[str] | None = None
    """The servers measured at N beyond the first (None: every server)."""
    large_scenarios: Sequence[str] | None = None
    """The scenarios run at N beyond the first (None: every scenario)."""


@dataclass
class Level:
    """One generator run against one server at one offered load."""

    offered: float
    """Offered deliveries/s (messages the server should write to clients each second)."""
    result: dict[str, Any]
    ok: bool
    probe: bool = False

    @property
    def delivered(self) -> float:
        return float(self.result["delivered_per_s"])


@dataclass
class Knee:
    """A server's knee in one run of one scenario at one N."""

    server: str
    scenario: str
    clients: int
    run: int
    knee: float = 0.0
    """Highest delivered messages/s with p99 < P99_LIMIT_MS (0: not even the lowest level)."""
    peak: float = 0.0
    """Highest delivered messages/s seen (the saturation probe or any level), latency
    regardless."""
    p50_ms: float = -1.0
    p99_ms: float = -1.0
    """Latency at the knee level."""
    gen_cpu: float = 0.0
    server_cpu: float = 0.0
    """CPU use (cores) of the generator and of the server over the probe."""
    rss_per_conn_kib: float = 0.0
    """Scenario idle: server RSS growth per connected client (after connect and, for Squall,
    one subscribe), KiB."""
    rss_baseline_kib: float = 0.0
    disturbance: float = 0.0
    """Cores of other work seen on the two CPUs during the probe or the knee level, the
    measurements the result comes from (see ATTEMPTS)."""
    failures: int = 0
    """Scenario storm: connects that failed in the measured window (refused, closed or not
    answered within 5 s)."""
    levels: list[Level] = field(default_factory=list)
    error: str = ""

    @property
    def p99_below_ms(self) -> float:
        """The worst p99 among the levels that passed at up to :data:`BELOW_KNEE` of the knee
        (the target's "p99 below the knee"); -1 when no such level was measured, and for
        the idle and storm scenarios, which have no knee search."""
        if self.scenario in ("idle", "storm"):
            return -1.0
        worst = [
            float(level.result["p99_ms"])
            for level in self.levels
            if level.ok and not level.probe and level.delivered <= BELOW_KNEE * self.knee
        ]
        return max(worst, default=-1.0)


def rooms(clients: int) -> int:
    """Scenario channels: the number of channels for `clients` clients."""
    return max(1, clients // CHANNEL_SIZE)


PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def per_source(port_range: str | None = None) -> int:
    """Connections one client address can open to one server port: the ephemeral port
    range (``net.ipv4.ip_local_port_range``, 32768-60999 by default), less a margin."""
    try:
        text = port_range if port_range is not None else PORT_RANGE.read_text()
        low, high = (int(x) for x in text.split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return max(1000, high - low + 1 - 1000)


def source_args(clients: int, port_range: str | None = None) -> list[str]:
    """Generator arguments spreading `clients` over enough 127.0.0.x source addresses that
    no address runs out of ephemeral ports (loopback answers every 127/8 address); none when
    one address is enough."""
    budget = per_source(port_range)
    if clients <= budget:
        return []
    count = -(-clients // budget)
    return ["--src", ",".join(f"127.0.0.{i + 1}" for i in range(count))]


def load_args(
    server: RunningServer, scenario: str, clients: int, offered: float = 0.0
) -> list[str]:
    """Generator arguments for one load of `scenario` on `server`: who connects and what
    they send (the storm: :data:`STORM_INFLIGHT` in flight; idle: nothing; the others:
    `offered` deliveries/s). Durations are the caller's."""
    if scenario == "storm":
        return [*server.loadgen_args("storm"), "--storm-inflight", str(STORM_INFLIGHT)]
    args = [*server.loadgen_args(scenario), "--clients", str(clients), *source_args(clients)]
    if scenario == "idle":
        return [*args, "--rate", "0"]
    return [*args, *_level_args(scenario, clients, offered)]


def _level_args(scenario: str, clients: int, offered: float) -> list[str]:
    """Generator arguments offering `offered` deliveries/s to `clients` clients."""
    if scenario == "broadcast":
        # each message goes to all N clients: N clients * r msgs/s * N = offered
        return ["--rate", f"{offered / clients / clients:.6g}"]
    if scenario == "channels":
        # each message goes to the N / R members of its channel: N * r * N / R = offered
        n_rooms = rooms(clients)
        rate = offered * n_rooms / clients / clients
        return ["--rooms", str(n_rooms), "--rate", f"{rate:.6g}"]
    # fanout, sse, xhr_streaming: each API publication goes to all N readers
    return ["--api-rate", f"{offered / clients:.6g}", "--api-conns", str(API_CONNS)]


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, *, timeout: float = 30.0, busy: float = 0.1) -> float:
    """Wait until the server uses less than `busy` of a core over half a second (it has
    finished the previous level's backlog and closed its connections), at most `timeout`
    seconds; return the seconds waited."""
    start = time.monotonic()
    before = _cpu_seconds(pid)
    while time.monotonic() - start < timeout:
        time.sleep(0.5)
        after = _cpu_seconds(pid)
        if after - before < busy * 0.5:
            break
        before = after
    return time.monotonic() - start


def disturbance(result: dict[str, Any]) -> float:
    """Cores of other processes' work on the server's and the generator's CPUs during the
    window (the larger of the two): /proc/stat busy time minus the server's or the
    generator's own CPU time."""
    busy = result.get("cpu_busy") or []
    if len(busy) <= max(SERVER_CPU, GENERATOR_CPU):
        return 0.0
    server = float(busy[SERVER_CPU]) - max(float(result["server_cpu"]), 0.0)
    generator = float(busy[GENERATOR_CPU]) - float(result["gen_cpu"])
    return max(server, generator, 0.0)


def _measure(
    binary: Path,
    server: RunningServer,
    scenario: str,
    clients: int,
    offered: float,
    duration: float,
    warmup: float,
    config: MatrixConfig,
    report: Callable[[str], None] | None = None,
    *,
    probe: bool = False,
) -> dict[str, Any]:
    """One level; taken again (up to ATTEMPTS times) while other work disturbed it and the
    result looks harmed. The least disturbed attempt is kept, with ``disturbance`` and
    ``attempts`` added."""
    args = load_args(server, scenario, clients, offered)
    args += ["--duration", str(duration), "--warmup", str(warmup), "--drain-timeout", "5"]
    best: dict[str, Any] | None = None
    for attempt in range(1, ATTEMPTS + 1):
        result = loadgen.run(binary, args, cpu=GENERATOR_CPU, nice=config.nice, rt=config.rt).raw
        result["disturbance"] = disturbance(result)
        result["attempts"] = attempt
        if best is None or result["disturbance"] < best["disturbance"]:
            best = result
        harmed = result["server_cpu"] < 0.9 if probe else not _ok(result, clients)
        if result["disturbance"] <= DISTURBANCE_LIMIT or not harmed:
            break
        if report is not None:
            report(
                f"  [yellow]other work took {result['disturbance']:.2f} cores: "
                "measuring again[/yellow]"
            )
        time.sleep(2.0)
    assert best is not None
    return best


def _ok(result: dict[str, Any], clients: int) -> bool:
    return bool(
        result["connected"] == clients
        and result["closed"] == 0
        and result["missing"] == 0
        and 0 <= result["p99_ms"] < P99_LIMIT_MS
    )


def find_knee(
    binary: Path,
    server: RunningServer,
    scenario: str,
    clients: int,
    run: int,
    config: MatrixConfig,
    report: Callable[[str], None],
) -> Knee:
    knee = Knee(server.spec.name, scenario, clients, run)
    # Probe at overload, raised 4x while the server keeps up; a server so swamped that it
    # delivers under a tenth of the next lower probe (serial sends, a backlog it never
    # catches up on) is probed again 10x lower.
    offered = PROBE_DELIVERIES
    probe: dict[str, Any] = {}
    while True:
        wait_idle(server.pid)
        result = _measure(
            binary,
            server,
            scenario,
            clients,
            offered,
            config.probe_duration,
            0.5,
            config,
            report,
            probe=True,
        )
        knee.levels.append(Level(offered, result, ok=False, probe=True))
        if not probe or result["delivered_per_s"] > probe["delivered_per_s"]:
            probe = result
        if result["delivered_per_s"] >= KEPT_UP * offered and offered < PROBE_MAX:
            offered *= 4  # it kept up: not saturated yet (coalesced writes go far)
            continue
        if result["delivered_per_s"] >= offered / 100 or offered <= PROBE_DELIVERIES / 100:
            break
        offered /= 10
    knee.peak = float(probe["delivered_per_s"])
    knee.gen_cpu = float(probe["gen_cpu"])
    knee.server_cpu = float(probe["server_cpu"])
    report(
        f"{server.spec.name} {scenario} N={clients}: peak {knee.peak:,.0f}/s "
        f"(server cpu {knee.server_cpu:.2f}, generator cpu {knee.gen_cpu:.2f})"
    )
    if probe["connected"] != clients:
        knee.error = f"only {probe['connected']} of {clients} clients connected"
        return knee
    fractions = list(LEVELS)
    retried = False
    failed_at = MAX_LEVEL  # the lowest fraction that failed twice (downward search)
    while fractions:
        fraction = fractions.pop(0)
        wait_idle(server.pid)  # the previous level's backlog and connections are gone
        offered = knee.peak * fraction
        if offered <= 0:
            break
        result = _measure(
            binary,
            server,
            scenario,
            clients,
            offered,
            config.duration,
            config.warmup,
            config,
            report,
        )
        level = Level(offered, result, ok=_ok(result, clients))
        knee.levels.append(level)
        report(
            f"  offered {offered:,.0f}/s -> delivered {level.delivered:,.0f}/s "
            f"p50 {result['p50_ms']:.1f} ms p99 {result['p99_ms']:.1f} ms"
            + ("" if level.ok else "  (over the limit)")
            + (
                f"  (disturbed: {result['disturbance']:.2f})"
                if result["disturbance"] > 0.15
                else ""
            )
        )
        if not level.ok:
            if retried:
                if knee.knee == 0 and fraction > MIN_LEVEL:
                    # Nothing passed yet: this server's latency breaks the limit far below
                    # its peak (serial awaits per recipient); search downwards.
                    retried = False
                    failed_at = min(failed_at, fraction)
                    fractions = [fraction / 2]
                    continue
                break
            # One latency spike (a GC pause, a noisy neighbour) must not end the ramp:
            # measure the same level once more, and stop if it fails again.
            retried = True
            fractions.insert(0, fraction)
            continue
        retried = False
        if level.delivered > knee.knee:
            knee.knee = level.delivered
            knee.disturbance = max(float(probe["disturbance"]), float(result["disturbance"]))
            knee.p50_ms = float(result["p50_ms"])
            knee.p99_ms = float(result["p99_ms"])
        if not fractions and fraction < MAX_LEVEL and fraction >= LEVELS[-1]:
            # The probe underestimated this server (it was not saturated): keep climbing.
            fractions.append(fraction * 1.15)
        elif not fractions and fraction * 1.3 < failed_at:
            # Found a passing level below a failing one: climb back towards it.
            fractions.append(fraction * 1.3)
    knee.peak = max([knee.peak] + [level.delivered for level in knee.levels])
    return knee


def measure_storm(
    binary: Path,
    server: RunningServer,
    run: int,
    config: MatrixConfig,
    report: Callable[[str], None],
) -> Knee:
    """Connects/s with token auth at full speed (:data:`STORM_INFLIGHT` in flight) over
    ``config.warmup`` + ``config.duration`` s; the knee and the peak are the connects/s of the
    window, p50/p99 the connect latency (TCP connect to the connect reply). Taken again (up to
    ATTEMPTS times) while other work took more than DISTURBANCE_LIMIT of a core; the least
    disturbed attempt is kept."""
    knee = Knee(server.spec.name, "storm", STORM_INFLIGHT, run)
    args = load_args(server, "storm", STORM_INFLIGHT)
    args += ["--duration", str(config.duration), "--warmup", str(config.warmup)]
    best: dict[str, Any] | None = None
    for attempt in range(1, ATTEMPTS + 1):
        wait_idle(server.pid)
        result = loadgen.run(binary, args, cpu=GENERATOR_CPU, nice=config.nice, rt=config.rt).raw
        result["disturbance"] = disturbance(result)
        result["attempts"] = attempt
        if best is None or result["disturbance"] < best["disturbance"]:
            best = result
        if result["disturbance"] <= DISTURBANCE_LIMIT:
            break
        report(
            f"  [yellow]other work took {result['disturbance']:.2f} cores: measuring again[/yellow]"
        )
        time.sleep(2.0)
    assert best is not None
    rate = float(best["connects_per_s"])
    knee.levels.append(Level(0.0, best, ok=rate > 0 and best["failed_in_window"] == 0))
    knee.knee = knee.peak = rate
    knee.p50_ms = float(best["p50_ms"])
    knee.p99_ms = float(best["p99_ms"])
    knee.gen_cpu = float(best["gen_cpu"])
    knee.server_cpu = float(best["server_cpu"])
    knee.disturbance = float(best["disturbance"])
    knee.failures = int(best["failed_in_window"])
    if rate <= 0:
        knee.error = f"no connect succeeded ({best['failed']} failed)"
    report(
        f"{server.spec.name} storm: {rate:,.0f} connects/s, p50 {knee.p50_ms:.1f} ms "
        f"p99 {knee.p99_ms:.1f} ms, {knee.failures} failed (server cpu {knee.server_cpu:.2f}, "
        f"generator cpu {knee.gen_cpu:.2f})"
    )
    return knee


IDLE_HOLD = 3.0
"""Seconds the generator holds the idle connections (RSS is sampled one second in)."""


def rss_kib(pid: int) -> float:
    """Resident set size of `pid` in KiB (VmRSS), 0 when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def measure_idle(
    binary: Path,
    server: RunningServer,
    clients: int,
    run: int,
    config: MatrixConfig,
    report: Callable[[str], None],
) -> Knee:
    """RSS per idle connection: the server's RSS once all `clients` have connected (and
    subscribed), minus its RSS before, per client."""
    knee = Knee(server.spec.name, "idle", clients, run)
    wait_idle(server.pid)
    before = rss_kib(server.pid)
    args = load_args(server, "idle", clients)
    args += ["--warmup", "0", "--duration", str(IDLE_HOLD), "--drain-timeout", "0"]
    cmd = loadgen.pinned([str(binary), *args], cpu=GENERATOR_CPU, nice=config.nice, rt=config.rt)
    after = 0.0
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if '"event":"connected"' in line:
                time.sleep(1.0)
                after = rss_kib(server.pid)
    results = [json.loads(line) for line in lines if line.startswith("{") and "event" not in line]
    if not results:
        knee.error = "the generator printed no result"
        return knee
    result = results[-1]
    result["disturbance"] = 0.0
    knee.levels.append(Level(0.0, result, ok=result["connected"] == clients))
    knee.rss_baseline_kib = before
    if result["connected"]:
        knee.rss_per_conn_kib = (after - before) / result["connected"]
    if result["connected"] != clients:
        knee.error = f"only {result['connected']} of {clients} clients connected"
    report(
        f"{server.spec.name} idle N={clients}: {knee.rss_per_conn_kib:.2f} KiB per connection "
        f"(baseline {before / 1024:.1f} MiB)"
    )
    return knee


def run_matrix(
    config: MatrixConfig,
    binary: Path,
    report: Callable[[str], None],
    advance: Callable[[], None],
    knees: list[Knee] | None = None,
) -> list[Knee]:
    """Measure every (repeat, N, scenario, server); servers run one at a time, pinned to CPU
    0, the generator to CPU 1. Each knee is appended to ``knees`` (when given) before
    ``advance`` is called, so a caller can save what a run measured so far."""
    knees = [] if knees is None else knees
    specs: list[ServerSpec] = [SERVERS[name] for name in config.servers]
    for run in range(config.repeats):
        for clients in config.clients:
            for spec in specs:
                scenarios = scenarios_for(spec, config, clients)
                if not scenarios:
                    continue
                done = 0
                try:
                    with start(spec, cpu=SERVER_CPU, nice=config.nice, rt=config.rt) as server:
                        for scenario in scenarios:
                            if scenario == "idle":
                                knee = measure_idle(binary, server, clients, run, config, report)
                            elif scenario == "storm":
                                knee = measure_storm(binary, server, run, config, report)
                            else:
                                knee = find_knee(
                                    binary, server, scenario, clients, run, config, report
                                )
                            knees.append(knee)
                            done += 1
                            advance()
                except Exception as exc:  # one broken peer must not sink the matrix
                    report(f"[red]{spec.name} N={clients} failed: {exc}[/red]")
                    for scenario in scenarios[done:]:
                        n = STORM_INFLIGHT if scenario == "storm" else clients
                        knees.append(Knee(spec.name, scenario, n, run, error=str(exc)))
                        advance()
    return knees


def scenarios_for(spec: ServerSpec, config: MatrixConfig, clients: int) -> list[str]:
    """The scenarios `spec` runs at N=`clients`: those it supports, in :data:`SCENARIOS`
    order; the storm (which does not depend on N) only at the first N; beyond the first N
    only ``config.large_servers`` run, and only ``config.large_scenarios``."""
    first = clients == config.clients[0]
    if not first and config.large_servers is not None and spec.name not in config.large_servers:
        return []
    return [
        s
        for s in SCENARIOS
        if s in config.scenarios
        and spec.supports(s)
        and (first or (s != "storm" and s in (config.large_scenarios or SCENARIOS)))
    ]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarize(knees: Sequence[Knee], reference: str = "squall") -> list[dict[str, Any]]:
    """One row per (scenario, N, server): medians over runs, and the median of the per-run
    ratios reference/server (each ratio from numbers measured in the same run)."""
    rows: list[dict[str, Any]] = []
    keys = sorted({(k.scenario, k.clients) for k in knees})
    for scenario, clients in keys:
        group = [k for k in knees if k.scenario == scenario and k.clients == clients]
        servers = list(dict.fromkeys(k.server for k in group))
        by_run: dict[int, dict[str, Knee]] = {}
        for k in group:
            by_run.setdefault(k.run, {})[k.server] = k
        for name in servers:
            mine = [k for k in group if k.server == name and not k.error]
            peak_ratios = [
                run[reference].peak / run[name].peak
                for run in by_run.values()
                if reference in run
                and name in run
                and run[name].peak > 0
                and not run[reference].error
            ]
            ratios = [
                run[reference].knee / run[name].knee
                for run in by_run.values()
                if reference in run
                and name in run
                and run[name].knee > 0
                and not run[reference].error
            ]
            rows.append(
                {
                    "scenario": scenario,
                    "clients": clients,
                    "server": name,
                    "runs": len(mine),
                    "knee": _median([k.knee for k in mine]),
                    "peak": _median([k.peak for k in mine]),
                    "p50_ms": _median([k.p50_ms for k in mine if k.p50_ms >= 0]),
                    "p99_ms": _median([k.p99_ms for k in mine if k.p99_ms >= 0]),
                    "p99_below_ms": _median([k.p99_below_ms for k in mine if k.p99_below_ms >= 0]),
                    "server_cpu": _median([k.server_cpu for k in mine]),
                    "gen_cpu": _median([k.gen_cpu for k in mine]),
                    "rss_per_conn_kib": _median([k.rss_per_conn_kib for k in mine]),
                    "rss_baseline_kib": _median([k.rss_baseline_kib for k in mine]),
                    "rss_ratios": [
                        run[reference].rss_per_conn_kib / run[name].rss_per_conn_kib
                        for run in by_run.values()
                        if reference in run and name in run and run[name].rss_per_conn_kib > 0
                    ],
                    "disturbance": max([k.disturbance for k in mine], default=0.0),
                    "failures": _median([k.failures for k in mine]),
                    "ratios": ratios,
                    "ratio": _median(ratios),
                    "peak_ratios": peak_ratios,
                    "peak_ratio": _median(peak_ratios),
                    "errors": [k.error for k in group if k.server == name and k.error],
                }
            )
    return rows


def to_json(knees: Sequence[Knee]) -> list[dict[str, Any]]:
    return [asdict(k) for k in knees]


def knee_from_json(data: dict[str, Any]) -> Knee:
    fields = dict(data)
    fields["levels"] = [Level(**level) for level in data.get("levels", [])]
    return Knee(**fields)

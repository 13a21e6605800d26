"""``python -m bench``: build the generator, run the matrix, write RESULTS.md and the plot.

::

    python -m bench matrix --quick        # N=1000, one repeat, squall and three peers
    python -m bench matrix                # every peer at N=1000, the bounding four at 5k/10k
    python -m bench matrix --servers squall,node-ws --clients 1000,5000 --repeats 5
    python -m bench matrix --quick --scenarios channels,storm,sse,xhr_streaming
    python -m bench loadgen -- --port 8000 --clients 100 --count 1   # the generator alone
    python -m bench profile channels --offered 113000   # py-spy of Squall under one load
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench import loadgen, matrix, profile, report
from bench.servers import SERVERS

__all__ = ["main", "raise_nofile"]

BENCH_DIR = Path(__file__).resolve().parent
QUICK_SERVERS = matrix.BOUNDING_SERVERS
FULL_REPEATS = 2
NOFILE_WANTED = 120_000
"""Open files for 50k connections: 50k sockets in the server and 50k in the generator,
plus slack."""


def raise_nofile(console: Console | None = None) -> int:
    """Raise the soft open-files limit to the hard limit (children inherit it); say what is
    missing for 50k connections. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else NOFILE_WANTED
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < NOFILE_WANTED and console is not None:
        console.print(
            f"[yellow]open files limit is {target}: enough for about {target - 100:,} "
            f"connections per process; 50k connections need {NOFILE_WANTED:,} "
            f"(root: `ulimit -Hn {NOFILE_WANTED}` or LimitNOFILE=; the runner spreads "
            "clients over 127.0.0.x source addresses itself)[/yellow]"
        )
    return target


RT_RUNTIME = Path("/proc/sys/kernel/sched_rt_runtime_us")


@contextlib.contextmanager
def rt_unthrottled(rt: int, console: Console) -> Iterator[str]:
    """Lift Linux's real-time throttling for the run, and restore it after.

    By default SCHED_RR tasks get 950 ms of every second (``sched_rt_runtime_us``): a
    saturated server is then stopped for 50 ms once a second, and that pause, not the server,
    is what p99 measures near saturation. Yields how the run was scheduled (for RESULTS.md).
    """
    if not rt:
        yield ""
        return
    try:
        before = RT_RUNTIME.read_text().strip()
    except OSError:
        yield f"SCHED_RR priority {rt}"
        return
    if before == "-1":
        yield f"SCHED_RR priority {rt}, real-time throttling off"
        return
    try:
        RT_RUNTIME.write_text("-1")
    except OSError:
        console.print(
            f"[yellow]could not lift real-time throttling ({RT_RUNTIME} = {before}): a "
            "saturated server pauses 50 ms a second, which shows in p99[/yellow]"
        )
        yield f"SCHED_RR priority {rt}, real-time throttling on ({before} us per second)"
        return
    try:
        yield f"SCHED_RR priority {rt}, real-time throttling lifted for the run"
    finally:
        RT_RUNTIME.write_text(before)


def _matrix(args: argparse.Namespace, console: Console) -> int:
    large_servers: tuple[str, ...] | None = None
    large_scenarios: tuple[str, ...] | None = None
    if args.quick:
        servers = list(args.servers or QUICK_SERVERS)
        clients = args.clients or [1000]
        repeats = args.repeats or 1
        scenarios = list(args.scenarios or matrix.QUICK_SCENARIOS)
    else:
        servers = list(args.servers or SERVERS)
        clients = args.clients or [1000, 5000, 10000]
        repeats = args.repeats or FULL_REPEATS
        scenarios = list(args.scenarios or matrix.SCENARIOS)
        if not args.servers and not args.every_n:
            # every peer at the first N; the bounding servers and the target scenarios beyond
            large_servers = matrix.BOUNDING_SERVERS
            large_scenarios = matrix.LARGE_N_SCENARIOS
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        console.print(f"[red]unknown servers {unknown}; known: {', '.join(SERVERS)}[/red]")
        return 2
    unknown = [s for s in scenarios if s not in matrix.SCENARIOS]
    if unknown:
        console.print(
            f"[red]unknown scenarios {unknown}; known: {', '.join(matrix.SCENARIOS)}[/red]"
        )
        return 2
    limit = raise_nofile(console)
    if max(clients) + 200 > limit:
        console.print(f"[red]N={max(clients)} needs more than {limit} open files[/red]")
        return 2
    binary = loadgen.build()
    config = matrix.MatrixConfig(
        servers=servers,
        clients=clients,
        scenarios=scenarios,
        repeats=repeats,
        duration=args.duration,
        warmup=args.warmup,
        nice=args.nice,
        rt=args.rt,
        large_servers=large_servers,
        large_scenarios=large_scenarios,
    )
    total = repeats * sum(
        len(matrix.scenarios_for(SERVERS[name], config, n)) for n in clients for name in servers
    )
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    knees: list[matrix.Knee] = []

    def save(scheduling: str) -> list[dict[str, Any]]:
        """results.json, RESULTS.md and the plot from the knees measured so far."""
        versions = {}
        for name in servers:
            try:
                versions[name] = SERVERS[name].versions()
            except Exception as exc:  # a version lookup must not lose the results
                versions[name] = {"version": f"unknown ({exc})"}
        saved = {
            "command": command,
            "machine": {**report.machine(), "scheduling": scheduling},
            "versions": versions,
            "knees": matrix.to_json(knees),
        }
        (out / "results.json").write_text(json.dumps(saved, indent=1))
        return _render(saved, out)

    with (
        rt_unthrottled(args.rt, console) as scheduling,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} knees"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task("matrix", total=total)

        def advance() -> None:
            progress.advance(task)
            save(scheduling)  # a run cut short keeps what it measured

        matrix.run_matrix(
            config, binary, report=progress.console.print, advance=advance, knees=knees
        )
    rows = save(scheduling)
    for r in rows:
        if r["scenario"] == "idle":
            console.print(
                f"idle      N={r['clients']:<6} {r['server']:12} "
                f"{r['rss_per_conn_kib']:.2f} KiB per connection"
            )
            continue
        if r["scenario"] == "storm":
            console.print(
                f"storm     in flight {r['clients']:<4} {r['server']:12} "
                f"{r['knee']:>8,.0f} connects/s p99 {r['p99_ms']:6.1f} ms  "
                f"failed {r['failures']:.0f}  squall/x {r['ratio']:.2f}"
            )
            continue
        console.print(
            f"{r['scenario']:9} N={r['clients']:<6} {r['server']:12} knee {r['knee']:>10,.0f}/s "
            f"p99 {r['p99_ms']:6.1f} ms  peak {r['peak']:>10,.0f}/s  squall/x {r['ratio']:.2f}"
        )
    console.print(f"wrote {out / 'RESULTS.md'}")
    return 0


def _profile(args: argparse.Namespace, console: Console) -> int:
    raise_nofile(console)
    prof, result = profile.record(
        args.scenario,
        server_name=args.server,
        clients=args.clients,
        offered=args.offered,
        seconds=args.seconds,
        rt=args.rt,
        output=args.output,
    )
    keys = ("delivered_per_s", "connects_per_s", "p50_ms", "p99_ms", "server_cpu", "gen_cpu")
    console.print({k: result[k] for k in keys if k in result})
    console.print(f"{prof.total} samples in {args.output}")
    for title, inclusive in (("self", False), ("inclusive", True)):
        console.print(f"[bold]{title}[/bold]")
        for share, frame in prof.top(args.top, inclusive=inclusive):
            console.print(f"{100 * share:5.1f}%  {frame}", highlight=False)
    return 0


def _render(saved: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """RESULTS.md and results.png in `out` from a results.json's content."""
    knees = [matrix.knee_from_json(k) for k in saved["knees"]]
    rows = matrix.summarize(knees)
    plot_name = "results.png" if report.plot(out / "results.png", rows) else None
    names = list(dict.fromkeys(k.server for k in knees))
    report.write_results(
        out / "RESULTS.md",
        command=saved["command"],
        rows=rows,
        versions=saved["versions"],
        descriptions={n: SERVERS[n].description if n in SERVERS else n for n in names},
        plot_name=plot_name,
        info=saved["machine"],
        notes=(out / "PROFILE.md").read_text() if (out / "PROFILE.md").exists() else "",
    )
    return rows


def _csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _csv(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("matrix", help="run servers side by side and write RESULTS.md")
    m.add_argument(
        "--quick", action="store_true", help="N=1000, one repeat, squall and three peers"
    )
    m.add_argument("--servers", type=_csv, help=f"comma-separated from: {', '.join(SERVERS)}")
    m.add_argument("--clients", type=_csv_ints, help="comma-separated N values")
    m.add_argument(
        "--scenarios",
        type=_csv,
        help=f"comma-separated from: {', '.join(matrix.SCENARIOS)} (default: all; with "
        f"--quick: {', '.join(matrix.QUICK_SCENARIOS)})",
    )
    m.add_argument(
        "--repeats", type=int, help=f"runs per point (default 1 quick, {FULL_REPEATS} full)"
    )
    m.add_argument(
        "--every-n",
        action="store_true",
        help="full mode: every server and scenario at every N (default: every peer at the "
        f"first N; beyond it only {', '.join(matrix.BOUNDING_SERVERS)} in "
        f"{', '.join(matrix.LARGE_N_SCENARIOS)}; naming --servers implies this)",
    )
    m.add_argument("--duration", type=float, default=2.0, help="measured seconds per level")
    m.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per level")
    m.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the server and generator (e.g. -10 on a shared machine; root only)",
    )
    m.add_argument(
        "--rt",
        type=int,
        default=0,
        help="run the server and generator under SCHED_RR at this priority (root; for a "
        "shared machine: others get only the CPU they leave idle)",
    )
    m.add_argument("--output", type=Path, default=BENCH_DIR, help="where RESULTS.md goes")
    rp = sub.add_parser("report", help="write RESULTS.md and the plot again from results.json")
    rp.add_argument("--output", type=Path, default=BENCH_DIR)
    pf = sub.add_parser("profile", help="py-spy profile of a server under one scenario")
    pf.add_argument("scenario", choices=matrix.SCENARIOS)
    pf.add_argument(
        "--server",
        default="squall",
        choices=[name for name in SERVERS if not name.startswith("node-")],
        help="a Python server (py-spy samples Python only)",
    )
    pf.add_argument("--clients", type=int, default=1000)
    pf.add_argument(
        "--offered", type=float, default=0.0, help="deliveries/s to offer (not for storm, idle)"
    )
    pf.add_argument("--seconds", type=float, default=6.0, help="seconds sampled")
    pf.add_argument("--rt", type=int, default=0, help="SCHED_RR priority, as for matrix")
    pf.add_argument("--top", type=int, default=20, help="frames shown per table")
    pf.add_argument("--output", type=Path, default=Path("profile.txt"), help="py-spy raw file")
    lg = sub.add_parser("loadgen", help="build the generator and pass arguments to it")
    lg.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers under test are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    console = Console()
    if args.command == "matrix":
        sys.exit(_matrix(args, console))
    if args.command == "profile":
        sys.exit(_profile(args, console))
    if args.command == "report":
        _render(json.loads((args.output / "results.json").read_text()), args.output)
        console.print(f"wrote {args.output / 'RESULTS.md'}")
        return
    raise_nofile()
    binary = loadgen.build()
    extra = [a for a in args.args if a != "--"]
    result = loadgen.run(binary, extra)
    print(json.dumps(result.raw))

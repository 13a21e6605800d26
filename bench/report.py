"""RESULTS.md and the plot: the command, versions, machine, medians and per-run ratios."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["machine", "plot", "write_results"]


def machine() -> dict[str, str]:
    """nproc, CPU model, kernel, memory, date."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git_head(),
    }


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=False,
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value else "-"


def write_results(
    path: Path,
    *,
    command: str,
    rows: Sequence[Mapping[str, Any]],
    versions: Mapping[str, Mapping[str, str]],
    descriptions: Mapping[str, str],
    plot_name: str | None,
    info: Mapping[str, str] | None = None,
    notes: str = "",
) -> None:
    """Write RESULTS.md; `info` is :func:`machine` as saved with the results."""
    info = info or machine()
    lines = [
        "# Benchmark results",
        "",
        "Produced by:",
        "",
        "```",
        command,
        "```",
        "",
        f"- Date: {info['date']} (Squall at git {info['git']})",
        f"- Machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory']}, "
        f"Linux {info['kernel']}, Python {info['python']}",
        "- Server pinned to CPU 0 (taskset), C load generator (bench/loadgen) on CPU 1.",
        *([f"- Scheduling: {info['scheduling']}"] if info.get("scheduling") else []),
        "- knee: highest delivered messages/s with p99 < 100 ms; peak: delivered messages/s "
        "under overload (latency regardless); ratio: Squall's knee / this server's knee, "
        "median of per-run ratios (each from one run, never across runs). p50/p99: at the "
        "knee level; p99 below: the worst p99 of the levels that passed at up to 80% of the "
        "knee (median over runs). knee `-`: no "
        "level held p99 under 100 ms (at N=10000 one sweep of sends to every client can take "
        "that long by itself). n/a: the server cannot run the scenario with the same "
        "semantics; a server absent at some N was not measured there (full mode measures "
        "every peer at the first N, the bounding servers at every N).",
        "- CPU columns: cores used by the server and by the generator during the peak probe; "
        "a generator near 1.0 would mean the generator, not the server, limited the run. "
        "other load: CPU (cores) other processes took on those two CPUs during the probe or "
        "the knee level (this machine is shared; with --rt they only get the time the "
        "benchmark leaves idle; a level that failed while disturbed is retaken up to 3 "
        "times).",
        "",
        "Servers:",
        "",
    ]
    for name, desc in descriptions.items():
        ver = ", ".join(f"{k} {v}" for k, v in versions.get(name, {}).items())
        lines.append(f"- **{name}**: {desc}" + (f" ({ver})" if ver else ""))
    lines.append("")
    scenarios = list(dict.fromkeys(str(r["scenario"]) for r in rows))
    servers = list(dict.fromkeys(str(r["server"]) for r in rows))
    for scenario in scenarios:
        lines += [f"## {TITLES.get(scenario, scenario)}", ""]
        if scenario in NOTES:
            lines += [NOTES[scenario], ""]
        mine = _with_na(rows, scenario, servers)
        if scenario == "idle":
            lines += _idle_table(mine)
            continue
        if scenario == "storm":
            lines += _storm_table(mine)
            continue
        lines.append(
            "| N | server | runs | knee msg/s | p50 ms | p99 ms | p99 below ms | peak msg/s "
            "| server CPU | gen CPU | other load | squall / server (knee) | per-run "
            "| squall / server (peak) | per-run |"
        )
        lines.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
        for r in mine:
            if r.get("na"):
                lines.append(f"| {r['clients']} | {r['server']} |" + " n/a |" * 13)
                continue
            below = f"{r['p99_below_ms']:.1f}" if r.get("p99_below_ms") else "-"
            ratios = ", ".join(f"{x:.2f}" for x in r["ratios"])
            peak_ratios = ", ".join(f"{x:.2f}" for x in r["peak_ratios"])
            err = f" (error: {r['errors'][0][:80]})" if r["errors"] else ""
            lines.append(
                f"| {r['clients']} | {r['server']}{err} | {r['runs']} | {_fmt(r['knee'])} "
                f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {below} | {_fmt(r['peak'])} "
                f"| {r['server_cpu']:.2f} | {r['gen_cpu']:.2f} | {r['disturbance']:.2f} "
                f"| {_ratio(r)} | {ratios} | {_ratio(r, 'peak_ratio')} | {peak_ratios} |"
            )
        lines.append("")
    if plot_name:
        lines += [f"![delivered messages/s vs N]({plot_name})", ""]
    if notes:
        lines += [notes.rstrip(), ""]
    path.write_text("\n".join(lines))


TITLES = {
    "idle": "Idle connections: server RSS per connection (after connect and subscribe)",
    "broadcast": "Broadcast room: N clients each publishing, every message to all",
    "fanout": "Fan-out: server API publications to N subscribers of one channel",
    "channels": "Many channels: N clients on N/10 channels, each publishing into its own",
    "sse": "SSE fan-out: server API publications to N Server-Sent Events readers",
    "xhr_streaming": "SockJS xhr-streaming fan-out: server API publications to N readers",
    "storm": "Connection storm: WebSocket connects/s, a JWT verified per connection",
}
NOTES = {
    "channels": "Every message reaches the 10 members of its channel (Squall: channels "
    "`bench.<i mod N/10>`; peers: rooms `/?room=K`); msg/s counts deliveries.",
    "sse": "Squall: `/connection/uni_sse`, the token's `channels` claim subscribes the reader; "
    "peers: `GET /sse`, one `data:` event per publication.",
    "xhr_streaming": "Squall: the Centrifugo protocol over SockJS `/connection/sockjs` (connect "
    "and subscribe via `xhr_send`); peers: their SockJS echo room. Streams end at SockJS's "
    "response_limit (128 KiB) and the reader reopens them; that gap is in the latency.",
    "storm": "Each connection: TCP connect, WebSocket handshake, credentials (Squall: connect "
    'command with a JWT; peers: `{"token": JWT}` as the first message, verified with '
    "PyJWT or jsonwebtoken), the reply, then a close handshake. One level at full speed; "
    "connects/s over the window, latency from TCP connect to the reply.",
}


def _with_na(
    rows: Sequence[Mapping[str, Any]], scenario: str, servers: Sequence[str]
) -> list[Mapping[str, Any]]:
    """The rows of `scenario`, plus an n/a row (``na``) at its first N for each server of the
    run that does not do it, so a missing peer is visible rather than silently absent. A
    server measured at another N but not at this one (full mode: the bounding servers only
    beyond the first N) is left out there."""
    mine = [r for r in rows if r["scenario"] == scenario]
    measured = {r["server"] for r in mine}
    out: list[Mapping[str, Any]] = []
    for i, clients in enumerate(dict.fromkeys(r["clients"] for r in mine)):
        have = {r["server"]: r for r in mine if r["clients"] == clients}
        for server in servers:
            if server in have:
                out.append(have[server])
            elif i == 0 and server not in measured:
                out.append({"clients": clients, "server": server, "na": True})
    return out


def _ratio(row: Mapping[str, Any], key: str = "ratio") -> str:
    """A median ratio, or ``-`` when no run gave one (the server had no knee: every level
    broke the latency limit)."""
    return f"{row[key]:.2f}" if row[key + "s"] else "-"


def _storm_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| in flight | server | runs | connects/s | p50 ms | p99 ms | failed | server CPU "
        "| gen CPU | other load | squall / server | per-run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.get("na"):
            lines.append(f"| {r['clients']} | {r['server']} |" + " n/a |" * 10)
            continue
        ratios = ", ".join(f"{x:.2f}" for x in r["ratios"])
        err = f" (error: {r['errors'][0][:80]})" if r["errors"] else ""
        lines.append(
            f"| {r['clients']} | {r['server']}{err} | {r['runs']} | {_fmt(r['knee'])} "
            f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r.get('failures', 0):.0f} "
            f"| {r['server_cpu']:.2f} | {r['gen_cpu']:.2f} | {r['disturbance']:.2f} "
            f"| {_ratio(r)} | {ratios} |"
        )
    lines.append("")
    return lines


def _idle_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| N | server | runs | KiB per connection | baseline RSS MiB | squall / server | per-run |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.get("na"):
            lines.append(f"| {r['clients']} | {r['server']} |" + " n/a |" * 5)
            continue
        ratios = [float(x) for x in r.get("rss_ratios", [])]
        median = sorted(ratios)[len(ratios) // 2] if ratios else 0.0
        err = f" (error: {r['errors'][0][:80]})" if r["errors"] else ""
        lines.append(
            f"| {r['clients']} | {r['server']}{err} | {r['runs']} "
            f"| {r['rss_per_conn_kib']:.2f} | {r['rss_baseline_kib'] / 1024:.1f} "
            f"| {median:.2f} | {', '.join(f'{x:.2f}' for x in ratios)} |"
        )
    lines.append("")
    return lines


def plot(path: Path, rows: Sequence[Mapping[str, Any]]) -> bool:
    """Delivered messages/s (knee) against N, one panel per scenario that delivers messages
    (not idle, not the storm), one line per server. Returns False when matplotlib is missing
    (install the ``bench`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return False
    scenarios = list(
        dict.fromkeys(str(r["scenario"]) for r in rows if r["scenario"] not in ("idle", "storm"))
    )
    if not scenarios:
        return False
    ncols = min(3, len(scenarios))
    nrows = (len(scenarios) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4.5 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(scenarios) :]:
        ax.set_visible(False)
    names = list(dict.fromkeys(str(r["server"]) for r in rows))
    # one colour per server, the same in every panel
    palette = [plt.get_cmap("tab20")(i) for i in range(20)]
    colors = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    for ax, scenario in zip(flat, scenarios, strict=False):
        mine = [r for r in rows if r["scenario"] == scenario and r["knee"] > 0]
        # a server with no knee (no level under the limit) has no point there
        servers = list(dict.fromkeys(str(r["server"]) for r in mine))
        ns = sorted({int(r["clients"]) for r in mine})
        if len(ns) == 1:  # one N: a bar per server, Squall first
            knees = {str(r["server"]): float(r["knee"]) for r in mine}
            ax.barh(servers, [knees[s] for s in servers], color=[colors[s] for s in servers])
            ax.invert_yaxis()
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labels on decades only
            ax.set_xlabel("delivered messages/s")
            ax.set_title(f"{scenario}, N={ns[0]}: knee (p99 < 100 ms)")
            ax.grid(True, axis="x", alpha=0.3)
            continue
        for server in servers:
            pts = sorted(
                (int(r["clients"]), float(r["knee"])) for r in mine if r["server"] == server
            )
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                label=server,
                color=colors[server],
            )
        ax.set_title(f"{scenario}: delivered msg/s at the knee (p99 < 100 ms)")
        ax.set_xlabel("N clients")
        ax.set_ylabel("delivered messages/s")
        ax.set_xscale("log")
        ax.set_yscale("log")  # Squall's coalesced writes and the slowest peers differ 1000x
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True

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
        "median of per-run ratios (each from one run, never across runs).",
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
    titles = {
        "broadcast": "Broadcast room: N clients each publishing, every message to all",
        "fanout": "Fan-out: server API publications to N subscribers of one channel",
        "idle": "Idle connections: server RSS per connection (after connect and subscribe)",
    }
    for scenario in scenarios:
        lines += [f"## {titles.get(scenario, scenario)}", ""]
        if scenario == "idle":
            lines += _idle_table(rows)
            continue
        lines.append(
            "| N | server | runs | knee msg/s | p50 ms | p99 ms | peak msg/s | server CPU "
            "| gen CPU | other load | squall / server (knee) | per-run | squall / server (peak) "
            "| per-run |"
        )
        lines.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
        for r in rows:
            if r["scenario"] != scenario:
                continue
            ratios = ", ".join(f"{x:.2f}" for x in r["ratios"])
            peak_ratios = ", ".join(f"{x:.2f}" for x in r["peak_ratios"])
            err = f" (error: {r['errors'][0][:80]})" if r["errors"] else ""
            lines.append(
                f"| {r['clients']} | {r['server']}{err} | {r['runs']} | {_fmt(r['knee'])} "
                f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {_fmt(r['peak'])} "
                f"| {r['server_cpu']:.2f} | {r['gen_cpu']:.2f} | {r['disturbance']:.2f} "
                f"| {r['ratio']:.2f} | {ratios} | {r['peak_ratio']:.2f} | {peak_ratios} |"
            )
        lines.append("")
    if plot_name:
        lines += [f"![delivered messages/s vs N]({plot_name})", ""]
    if notes:
        lines += [notes.rstrip(), ""]
    path.write_text("\n".join(lines))


def _idle_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| N | server | runs | KiB per connection | baseline RSS MiB | squall / server | per-run |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["scenario"] != "idle":
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
    """Delivered messages/s (knee) against N, one line per server and scenario. Returns False
    when matplotlib is missing (install the ``bench`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = list(dict.fromkeys(str(r["scenario"]) for r in rows if r["scenario"] != "idle"))
    if not scenarios:
        return False
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 4.5), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        servers = list(dict.fromkeys(str(r["server"]) for r in rows if r["scenario"] == scenario))
        for server in servers:
            pts = sorted(
                (int(r["clients"]), float(r["knee"]))
                for r in rows
                if r["scenario"] == scenario and r["server"] == server
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=server)
        ax.set_title(f"{scenario}: delivered msg/s at the knee (p99 < 100 ms)")
        ax.set_xlabel("N clients")
        ax.set_ylabel("delivered messages/s")
        ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True

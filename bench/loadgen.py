"""Build and run the C load generator (bench/loadgen/loadgen.c)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LOADGEN_SOURCE", "LoadgenError", "Result", "build", "pinned", "run"]

BENCH_DIR = Path(__file__).resolve().parent
LOADGEN_SOURCE = BENCH_DIR / "loadgen" / "loadgen.c"
BUILD_DIR = BENCH_DIR / "build"


class LoadgenError(RuntimeError):
    """The generator failed to build or to produce a result line."""


@dataclass(frozen=True)
class Result:
    """One generator run: the JSON line it printed, with typed accessors."""

    raw: dict[str, Any]

    @property
    def delivered_per_s(self) -> float:
        return float(self.raw["delivered_per_s"])

    @property
    def p50_ms(self) -> float:
        return float(self.raw["p50_ms"])

    @property
    def p99_ms(self) -> float:
        return float(self.raw["p99_ms"])

    @property
    def connected(self) -> int:
        return int(self.raw["connected"])

    @property
    def gen_cpu(self) -> float:
        return float(self.raw["gen_cpu"])

    @property
    def server_cpu(self) -> float:
        return float(self.raw["server_cpu"])


def pinned(cmd: list[str], *, cpu: int | None, nice: int = 0, rt: int = 0) -> list[str]:
    """`cmd` run at `nice` (negative needs root) or, with `rt` > 0, under the SCHED_RR
    real-time policy at that priority (root; the kernel's RT throttling still leaves other
    work 5% of each CPU), and pinned to `cpu` (taskset), when asked."""
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    if rt:
        cmd = ["chrt", "--rr", str(rt), *cmd]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    return cmd


def build(output: Path | None = None, *, compiler: str | None = None) -> Path:
    """Compile the generator with the system C compiler (``cc``, or $CC) when the binary is
    missing or older than its source; return the binary's path."""
    binary = output or BUILD_DIR / "loadgen"
    if binary.exists() and binary.stat().st_mtime >= LOADGEN_SOURCE.stat().st_mtime:
        return binary
    cc = compiler or os.environ.get("CC") or shutil.which("cc") or "gcc"
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(".tmp")
    cmd = [cc, "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(LOADGEN_SOURCE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LoadgenError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    tmp.replace(binary)
    return binary


def run(
    binary: Path,
    args: Sequence[str],
    *,
    cpu: int | None = None,
    nice: int = 0,
    rt: int = 0,
    timeout: float = 600.0,
) -> Result:
    """Run the generator once (pinned to `cpu` with taskset when given, at `nice`) and parse
    its line."""
    cmd = pinned([str(binary), *args], cpu=cpu, nice=nice, rt=rt)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise LoadgenError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return Result(json.loads(lines[-1]))

"""``python -m bench profile``: a py-spy profile of one server under one scenario's load.

The server runs pinned to CPU 0 and the generator to CPU 1, as in the matrix; py-spy
samples the server for the middle of the run (after the connects and the warm-up) and the
top frames by self and by inclusive time are printed, with the generator's result line.
This is how the tables in PROFILE.md were made::

    python -m bench profile channels --offered 113000
    python -m bench profile storm
    python -m bench profile broadcast --clients 5000 --offered 3000000 --seconds 8
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen, matrix
from bench.servers import SERVERS, ServerError, start

__all__ = ["Profile", "parse_raw", "record"]


@dataclass(frozen=True)
class Profile:
    """Samples of a py-spy ``--format raw`` file: by leaf frame and by any frame."""

    total: int
    self_time: Counter[str]
    inclusive: Counter[str]

    def top(self, n: int = 20, *, inclusive: bool = False) -> list[tuple[float, str]]:
        """The `n` frames with the most samples, as (share of all samples, frame)."""
        counts = self.inclusive if inclusive else self.self_time
        total = self.total or 1  # an empty profile (py-spy saw nothing) has no frames
        return [(count / total, frame) for frame, count in counts.most_common(n)]


def parse_raw(lines: Iterable[str]) -> Profile:
    """Read py-spy's raw format: one ``frame;frame;...;leaf COUNT`` line per stack."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        self_time[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return Profile(total, self_time, inclusive)


def record(
    scenario: str,
    *,
    server_name: str = "squall",
    clients: int = 1000,
    offered: float = 0.0,
    seconds: float = 6.0,
    rt: int = 0,
    output: Path,
) -> tuple[Profile, dict[str, Any]]:
    """Run `server_name` under `scenario` at `offered` deliveries/s (the storm: full speed)
    and profile it for `seconds`; returns the profile and the generator's result."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise ServerError("py-spy is not installed: pip install py-spy")
    spec = SERVERS[server_name]
    if not spec.supports(scenario):
        raise ServerError(f"{server_name} does not run scenario {scenario}")
    if scenario not in ("storm", "idle") and offered <= 0:
        raise ServerError(f"scenario {scenario} needs --offered (deliveries/s)")
    binary = loadgen.build()
    warmup = 2.0  # connects, then load before the samples start
    with start(spec, cpu=matrix.SERVER_CPU, rt=rt) as server:
        args = matrix.load_args(server, scenario, clients, offered)
        args += ["--warmup", str(warmup), "--duration", str(seconds + 1.0)]
        if scenario not in ("storm", "idle"):
            args += ["--drain-timeout", "5"]
        cmd = loadgen.pinned([str(binary), *args], cpu=matrix.GENERATOR_CPU, rt=rt)
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(warmup + 0.5)
            spy = [py_spy, "record", "-p", str(server.pid), "-d", str(int(seconds))]
            spy += ["-r", "200", "-f", "raw", "-o", str(output), "--nonblocking"]
            proc = subprocess.run(spy, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not output.exists():
                raise ServerError(f"py-spy failed: {proc.stderr.strip()[-500:]}")
            out, _ = gen.communicate(timeout=seconds + 60)
        finally:
            if gen.poll() is None:
                gen.kill()
                gen.wait()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise loadgen.LoadgenError("the generator printed no result line")
    with output.open() as f:
        return parse_raw(f), json.loads(lines[-1])

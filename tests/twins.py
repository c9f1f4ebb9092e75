"""Set-up shared by an in-process test module and its installed-command twin.

Several commands are tested twice: fast, in process (``tests/unit``), and as
the installed console script or benchmark in a real process
(``tests/integration``).  What both halves need — the same fixed inputs, the
same expected output — lives here once, so the two cannot drift apart.
Import with ``from twins import …`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from murder import metainfo

#: Announce URL of the torrents the make-torrent tests build (never contacted).
ANNOUNCE = "http://tracker.example:8998/announce"

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


def make_torrent_summary(out: str) -> str:
    """``murder make-torrent``'s success line, rebuilt from the torrent file it wrote."""
    m = metainfo.load(out)
    return (f"{out}: info hash {m.info_hash.hex()}, {m.num_pieces} pieces "
            f"of {m.piece_length} bytes, {m.total_length} bytes\n")


def bench_module(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` (the benchmarks are scripts, not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


class SwarmBenchRun(NamedTuple):
    """One finished ``bench/swarm.py`` process."""

    report: dict[str, Any]  # its --json file
    output: str  # stdout and stderr
    pid: int  # names its namespaces (mzb<pid>x…)
    returncode: int


def run_swarm_bench(out: Path, *args: str, timeout: float) -> SwarmBenchRun:
    """Run ``bench/swarm.py *args --json out`` to its end (killed after ``timeout``
    seconds); its JSON report and everything it printed."""
    proc = subprocess.Popen([sys.executable, str(BENCH / "swarm.py"), *args, "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return SwarmBenchRun(json.loads(out.read_text()), output, proc.pid, proc.returncode)

"""Swarm benchmark harness: launch gate, bound, and a small end-to-end smoke run.

The smoke run (root + ``ip netns`` only) asserts correctness, never time: every
receiver of every method that ran holds the payload (sha256 checked by the
harness), and no namespace of the run is left behind.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from twins import REPO, bench_module, run_swarm_bench

gate_mod = bench_module("gate")
netns = bench_module("netns")


class GateTests:
    """Processes parked behind the gate start only when it opens."""

    def _spawn(self, tmp_path: Path, gate: gate_mod.Gate, i: int) -> gate_mod.Proc:
        out = tmp_path / f"started-{i}"
        return gate_mod.Proc.spawn(f"p{i}", "peer", gate.wrap(["sh", "-c", f": > {out}"]),
                                   log_path=str(tmp_path / f"log-{i}"), stdin=gate.stdin)

    def test_parked_until_open_then_all_run(self, tmp_path: Path) -> None:
        """Nothing runs before open(); every process runs and exits 0 after it."""
        gate = gate_mod.Gate(str(tmp_path))
        procs = [self._spawn(tmp_path, gate, i) for i in range(3)]
        deadline = time.monotonic() + 10
        while not all(gate_mod.is_parked(p.pid, gate) for p in procs):
            assert time.monotonic() < deadline, "processes never parked"
            time.sleep(0.02)
        time.sleep(0.2)
        assert not list(tmp_path.glob("started-*"))
        gate.open()
        for p in procs:
            assert p.wait(10)
            assert p.status == 0
            assert p.cpu_s is not None and p.maxrss_kib > 0
        assert len(list(tmp_path.glob("started-*"))) == 3
        gate.close()

    def test_closed_without_opening_never_runs_the_client(self, tmp_path: Path) -> None:
        """If the harness gives up before the gate opens, parked processes exit 97."""
        gate = gate_mod.Gate(str(tmp_path))
        proc = self._spawn(tmp_path, gate, 0)
        gate.close()
        assert proc.wait(10)
        assert proc.status == 97
        assert not (tmp_path / "started-0").exists()


def _murder_peer_cli() -> bool:
    murder = REPO / ".venv" / "bin" / "murder"
    return all(subprocess.run([str(murder), sub, "--help"], capture_output=True,
                              timeout=60).returncode == 0 for sub in ("tracker", "seed", "peer"))


@pytest.mark.netns
@pytest.mark.integration
class SwarmSmokeTests:
    """bench/swarm.py end to end on a tiny emulated datacenter (N=4, 2 MiB, 200 Mbit/s)."""

    def test_every_receiver_verified_and_namespaces_gone(self, tmp_path: Path) -> None:
        """murder (if its peer CLI exists) and http deliver a sha256-verified payload to
        all 4 receivers, and the run leaves no namespace behind."""
        reason = netns.netns_available()
        if reason:
            pytest.skip(reason)
        methods = ["http"] + (["murder"] if _murder_peer_cli() else [])
        run = run_swarm_bench(
            tmp_path / "smoke.json", "--sizes-mib", "2", "--rate-mbit", "200", "--n", "4",
            "--methods", ",".join(methods), "--no-verify-shaping", "--run-timeout", "40",
            "--timeout", "55", "--workdir", str(tmp_path), timeout=58)
        report, output = run.report, run.output
        assert [r["method"] for r in report["records"]] == methods, output
        for rec in report["records"]:
            assert rec["status"] == "ok", f"{rec['method']}: {rec.get('reason')}\n{output}"
            assert len(rec["receivers"]) == 4
            assert all(r["t_s"] is not None and r["failure"] is None for r in rec["receivers"])
        left = [ns for ns in netns.list_namespaces() if ns.startswith(f"mzb{run.pid}x")]
        assert left == []
        assert run.returncode == 0, output
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("mzb")]

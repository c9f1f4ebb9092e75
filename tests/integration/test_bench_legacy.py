"""bench/swarm.py's legacy methods: the Capistrano scripts and the 2010 original.

Their peers return after ``done and done`` and leave a detached seeder behind;
the harness must find those by PID (child subreaper), stop them and count
their CPU.  The smoke run asserts correctness only, never time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from twins import BENCH, bench_module, run_swarm_bench

netns = bench_module("netns")
swarm = bench_module("swarm")


class AdoptOrphansTests:
    """A detached grandchild becomes the harness's child, found and reaped by PID."""

    def test_double_forked_child_is_adopted_stopped_and_accounted(self, tmp_path: Path) -> None:
        """In a subreaper process, a grandchild whose parent exited (as
        ``murder_client.py peer`` leaves its seeder) is returned by
        adopt_orphans, stopped by PID, and reaped with its rusage; the known
        PIDs are left alone.  Runs in a separate interpreter: the subreaper
        flag is process-wide."""
        script = textwrap.dedent(f"""
            import json, subprocess, sys, time
            sys.path.insert(0, {str(BENCH)!r})
            import swarm
            from gate import stop_all
            assert swarm.become_subreaper()
            known = subprocess.Popen(["sleep", "30"])
            # The shell starts a busy-then-sleeping grandchild and exits at once.
            subprocess.run(["sh", "-c", "(i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done;"
                            " exec sleep 30) >/dev/null 2>&1 & echo $!"],
                           check=True, capture_output=True, text=True)
            deadline = time.monotonic() + 10
            found = []
            while not found and time.monotonic() < deadline:
                found = swarm.adopt_orphans({{known.pid}})
                time.sleep(0.05)
            stop_all(found)
            known.kill(); known.wait()
            print(json.dumps([[p.pid, p.status, p.cpu_s, p.running] for p in found]))
        """)
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        found = json.loads(r.stdout)
        assert len(found) == 1
        pid, status, cpu_s, running = found[0]
        assert running is False and status == -15
        assert cpu_s is not None and cpu_s > 0


@pytest.mark.netns
@pytest.mark.integration
class LegacySmokeTests:
    """murder-legacy (and murder2010 where python2.7 exists), N=2, 2 MiB, 200 Mbit/s."""

    def test_legacy_methods_deliver_and_count_detached_seeders(self, tmp_path: Path) -> None:
        """Every receiver of the legacy-script method (and of the 2010 original
        when python2.7 is installed; else it is reported as skipped) holds the
        verified payload, each peer's detached seeder was adopted and its CPU
        counted, and no namespace is left behind."""
        reason = netns.netns_available()
        if reason:
            pytest.skip(reason)
        run = run_swarm_bench(
            tmp_path / "legacy.json", "--sizes-mib", "2", "--rate-mbit", "200", "--n", "2",
            "--methods", "murder-legacy,murder2010", "--no-verify-shaping", "--run-timeout", "40",
            "--timeout", "100", "--workdir", str(tmp_path), timeout=110)
        report, output = run.report, run.output
        records = {r["method"]: r for r in report["records"]}
        assert set(records) == {"murder-legacy", "murder2010"}, output
        has_py27 = swarm._pyenv_python27() is not None
        expected = ["murder-legacy"] + (["murder2010"] if has_py27 else [])
        for name in expected:
            rec = records[name]
            assert rec["status"] == "ok", f"{name}: {rec.get('reason')}\n{output}"
            assert all(r["t_s"] is not None and r["exit"] == 0 for r in rec["receivers"])
            peers = [d for d in rec["detached"] if "peer" in d["argv"]]
            assert len(peers) >= 2, rec["detached"]
            assert rec["detached_cpu_s"] > 0
        if not has_py27:
            assert records["murder2010"]["status"] == "skipped"
            assert "python2.7" in records["murder2010"]["reason"]
        assert [ns for ns in netns.list_namespaces() if ns.startswith(f"mzb{run.pid}x")] == []
        assert run.returncode == 0, output

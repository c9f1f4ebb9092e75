"""`murder deploy`: host lists, per-host records, failure reasons, argv, display (in memory),
plus the local transport end to end (real processes on loopback, no SSH)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from murder.deploy import core

MURDER = str(Path(sys.executable).parent / "murder")


@pytest.mark.integration
class LocalTransportTests:
    """Real tracker, seeder and peer processes on loopback, no SSH."""

    def test_cli_and_api(self, tmp_path):
        """Every local "host" gets a verified copy; a failing --then fails only its
        host and the exit status says so; the Python API returns per-host results."""
        from murder.deploy import deploy

        payload = tmp_path / "rel.bin"
        payload.write_bytes(os.urandom(2**20 + 7))
        dest = str(tmp_path / "hosts" / "{host}")
        result = deploy(str(payload), dest, ["a", "b", "c"],
                        options=["--transport", "local", "--remote-murder", MURDER,
                                 "--then", 'case "$PWD" in */b) exit 3;; esac'],
                        timeout=120)
        assert result.exit_code == 1, result.output
        by_host = {h.host: h for h in result.hosts}
        assert by_host["a"].ok and by_host["c"].ok
        assert by_host["b"].kind == core.THEN_FAILED
        assert by_host["b"].reason == "then-command failed with status 3"
        for h in "abc":
            assert (tmp_path / "hosts" / h / "rel.bin").read_bytes() == payload.read_bytes()
        assert "b  then-failed" in result.output

    def test_timeout_fails_unfinished_hosts(self, tmp_path):
        """--timeout: hosts still downloading fail as timed out, their peers stop
        (the .part stays for a resume, nothing at the target) and the exit is 1."""
        payload = tmp_path / "big.bin"
        payload.write_bytes(os.urandom(2 * 2**20))
        slow = tmp_path / "slow-murder"
        slow.write_text(f'#!/bin/sh\nexec {MURDER} "$@" --max-download-rate 64K\n')
        slow.chmod(0o755)
        report = tmp_path / "r.json"
        proc = subprocess.run(
            [MURDER, "deploy", "--transport", "local", "--remote-murder", str(slow),
             "--timeout", "4", "--report", str(report), "-H", "a", str(payload),
             str(tmp_path / "{host}")], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "a  timed-out" in proc.stdout
        assert "timed out after 4s" in proc.stdout
        assert not (tmp_path / "a" / "big.bin").exists()
        assert (tmp_path / "a" / "big.bin.part").exists()

"""``murder deploy``: one command from a build host to a fleet, over SSH.

Python API: :func:`deploy` runs a deploy and returns one :class:`HostResult`
per host.  It runs ``murder deploy --report`` in a child process, so it can be
called any number of times from CI jobs, Fabric or Ansible (a Twisted
reactor cannot be restarted in one process).  Twisted programs can drive
:class:`murder.deploy.orchestrator.Deployment` on their own reactor instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["deploy", "HostResult", "DeployResult"]


@dataclass(frozen=True)
class HostResult:
    """One host's outcome: ``result`` is ``verified`` or ``failed``."""

    host: str
    result: str
    kind: str | None
    reason: str | None
    started: float | None
    completed: float | None
    bytes_up: int
    bytes_down: int
    attempts: int

    @property
    def ok(self) -> bool:
        return self.result == "verified"


@dataclass(frozen=True)
class DeployResult:
    """The whole deploy: ``ok`` only when every host verified."""

    exit_code: int
    hosts: tuple[HostResult, ...]
    report: dict
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def failed(self) -> tuple[HostResult, ...]:
        return tuple(h for h in self.hosts if not h.ok)


def deploy(payload: str, dest: str, hosts: Iterable[str], *,
           options: Sequence[str] = (), timeout: float | None = None,
           murder: Sequence[str] | None = None) -> DeployResult:
    """Deploy ``payload`` to ``dest`` on ``hosts``; return per-host results.

    ``options`` are further ``murder deploy`` flags (``["--then", "…",
    "--parallel", "32"]``); ``timeout`` bounds the child (give ``--timeout``
    in ``options`` to bound the deploy itself and still get a report).
    """
    command = list(murder or [sys.executable, "-m", "murder"])
    fd, report = tempfile.mkstemp(prefix="murder-deploy-", suffix=".json")
    os.close(fd)
    try:
        argv = [*command, "deploy", "--report", report, *options]
        for h in hosts:
            argv += ["--host", h]
        proc = subprocess.run([*argv, payload, dest], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        try:
            with open(report, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            doc = {"hosts": []}
    finally:
        os.unlink(report)
    results = tuple(HostResult(
        host=h["host"], result=h["result"], kind=h["kind"], reason=h["reason"],
        started=h["started"], completed=h["completed"], bytes_up=h["bytes_up"],
        bytes_down=h["bytes_down"], attempts=h["attempts"]) for h in doc["hosts"])
    return DeployResult(exit_code=proc.returncode, hosts=results, report=doc,
                        output=proc.stdout + proc.stderr)

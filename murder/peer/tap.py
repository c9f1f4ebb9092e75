"""``twistd murder-peer`` / ``murder-seeder`` and ``murder peer`` / ``murder seed``.

Options (:mod:`murder.peer.options`) → frozen :class:`RunConfig` →
:class:`~murder.peer.run.SwarmRun`, wrapped as a twistd service
(:func:`make_service`) or run in the foreground (:func:`run_foreground`).
``seedertap`` and ``peertap`` are the modules twistd's plugins point at.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

from twisted.internet import defer

from murder.peer.options import (MAX_STREAM_TORRENT, PeerOptions, RunConfig, SeederOptions,
                                 _CommonOptions, config_from, parse_rate, read_torrent_stream)
from murder.peer.run import SwarmRun


def make_service(options: _CommonOptions) -> Any:
    """``makeService`` for both plugins: the process exits with the run's status."""
    from twisted.application import service
    from twisted.internet import reactor

    run = SwarmRun(config_from(options), reactor)

    class _RunService(service.Service):
        def startService(self) -> None:  # noqa: N802
            super().startService()
            run.start()

        def stopService(self) -> defer.Deferred:  # noqa: N802
            super().stopService()
            return run.stop()

    def exit_with_status() -> None:
        if run.exit_code:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(run.exit_code)

    # twistd has no exit-status hook: this runs after its own cleanup.
    atexit.register(exit_with_status)
    svc = _RunService()
    svc.run = run  # type: ignore[attr-defined]
    return svc


def run_foreground(options: _CommonOptions) -> int:
    """Run in the foreground on the global reactor; return the exit status."""
    from murder.startup import skip_tls_stack

    config = config_from(options)
    skip_tls_stack(config.meta.trackers, config.ca)
    from twisted.internet import reactor

    from murder import runner

    prefix = f"murder {'seed' if config.role == 'seeder' else 'peer'}"
    runner.begin_logging(prefix, config.quiet)
    run = SwarmRun(config, reactor)
    if config.stop_on_eof:
        runner.stop_on_stdin_eof(reactor)
    runner.run(reactor, run.start, run.stop)
    code = run.exit_code if run.exit_code is not None else 1
    if code and run.failure_message and config.quiet:
        sys.stderr.write(f"{prefix}: {run.failure_message}\n")
    return code


__all__ = ["MAX_STREAM_TORRENT", "PeerOptions", "RunConfig", "SeederOptions", "SwarmRun",
           "config_from", "make_service", "parse_rate", "read_torrent_stream", "run_foreground"]

"""``twistd murder-tracker`` and ``murder tracker``: Options + makeService.

:class:`~murder.tracker.options.Options` (in :mod:`murder.tracker.options`)
only parses and validates; its :class:`~murder.tracker.options.TrackerConfig`
is the frozen result passed down.  :func:`~murder.tracker.service.build_service`
assembles the service tree (state, HTTP listener, UDP); :func:`makeService`
is twistd's entry point and :func:`runForeground` runs the same tree with
:mod:`murder.runner`.
"""

from __future__ import annotations

import sys

from twisted.application import service
from twisted.logger import Logger

from murder.startup import GC_YOUNG_THRESHOLD, tune_gc_for_tracker as tune_gc
from murder.tracker.options import Options, TrackerConfig
from murder.tracker.service import build_service, log_access
from murder.tracker.state import AllowedDir, TrackerStateService
from murder.tracker.tls import server_endpoint

log = Logger()


#: The old name, for code written against it.
buildService = build_service  # noqa: N816


def makeService(options: Options) -> service.MultiService:  # noqa: N802 (twistd API)
    """Entry point of the ``murder-tracker`` twistd plugin."""
    from twisted.internet import reactor

    tune_gc()
    log_access(options.config)
    log.info("murder tracker listening on {listen}, dfile {dfile}",
             listen=options.config.listen, dfile=options.config.dfile)
    return build_service(options.config, reactor)


def runForeground(options: Options) -> int:  # noqa: N802 (cli API)
    """Run the tracker until SIGINT/SIGTERM/SIGHUP; ``murder tracker`` returns this status."""
    from twisted.internet import reactor

    from murder import runner

    config = options.config
    tune_gc()
    runner.begin_logging("murder tracker")
    top = build_service(config, reactor)
    try:
        top.privilegedStartService()
    except Exception as e:
        reason = getattr(e, "socketError", None) or e
        where = config.listen + (f" and udp:{config.udp_port}" if config.udp_port else "")
        print(f"murder tracker: cannot listen on {where}: {reason}", file=sys.stderr)
        return 1
    top.startService()
    log_access(config)
    log.info("murder tracker listening on {listen}, dfile {dfile}",
             listen=config.listen, dfile=config.dfile)
    runner.run(reactor, None, top.stopService)
    return 0


__all__ = ["AllowedDir", "GC_YOUNG_THRESHOLD", "Options", "TrackerConfig", "TrackerStateService",
           "build_service", "buildService", "makeService", "runForeground", "server_endpoint",
           "tune_gc"]

"""Minimal libtorrent (python bindings) seeder/leecher for the swarm benchmark.

Seeds (``--seed``: checks the payload in ``--save-path`` first) or downloads a
torrent, with DHT, local peer discovery, UPnP and NAT-PMP off, announcing only
to the torrent's tracker.  A leecher creates ``--marker`` the moment libtorrent
reports the torrent finished (every piece hash-checked) and keeps seeding;
both run until SIGTERM/SIGINT, which exits at once (the harness owns timing).
A seeder prints ``seeding`` on stdout once its check is done.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import libtorrent as lt


def settings(listen: str) -> dict:
    """Datacenter-ish settings: no discovery but the tracker, no rate limits."""
    return {
        "listen_interfaces": listen,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "upload_rate_limit": 0,
        "download_rate_limit": 0,
        "connections_limit": 1000,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": (lt.alert.category_t.status_notification
                       | lt.alert.category_t.error_notification
                       | lt.alert.category_t.tracker_notification),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--save-path", required=True)
    ap.add_argument("--listen", required=True, help="ADDR:PORT to listen on")
    ap.add_argument("--seed", action="store_true", help="seed an existing payload")
    ap.add_argument("--marker", help="file to create when the download is complete")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))

    ses = lt.session(settings(args.listen))
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.save_path
    handle = ses.add_torrent(params)
    reported = False
    while True:
        ses.wait_for_alert(200)
        finished = False
        for alert in ses.pop_alerts():
            if isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
                print(f"error: {alert.message()}", file=sys.stderr, flush=True)
                return 1
            if isinstance(alert, (lt.tracker_error_alert, lt.tracker_warning_alert,
                                  lt.listen_failed_alert, lt.tracker_reply_alert)):
                print(f"{type(alert).__name__}: {alert.message()}", flush=True)
            finished = finished or isinstance(alert, lt.torrent_finished_alert)
        if not reported and (finished or handle.status().is_seeding):
            reported = True
            if args.marker:
                with open(args.marker, "w"):
                    pass
            print("seeding", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""twistd plugins: ``murder-tracker``, ``murder-seeder``, ``murder-peer``.

Only ServiceMaker lines: importing this file must stay cheap so that
``twistd --help`` is fast; the real modules load when a plugin is chosen.
"""

from twisted.application.service import ServiceMaker

murderTracker = ServiceMaker(
    "Murder tracker", "murder.tracker.tap", "BitTorrent tracker for datacenter deploys",
    "murder-tracker",
)
murderSeeder = ServiceMaker(
    "Murder seeder", "murder.peer.seedertap", "Seed a payload to a Murder swarm", "murder-seeder",
)
murderPeer = ServiceMaker(
    "Murder peer", "murder.peer.peertap", "Download a payload from a Murder swarm",
    "murder-peer",
)

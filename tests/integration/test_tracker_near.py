"""Real process: `murder tracker --topology FILE` names the requester's rack
networks in its announce reply (the ``near`` key the peers use to ask far
connections only for what no near one holds); without --topology the key is absent.
"""

from __future__ import annotations

import pytest

from conftest import free_port, venv_bin
from test_tracker_integration import Server


@pytest.mark.integration
class TrackerNearKeyTests:
    """The installed `murder tracker` with and without --topology."""

    def test_near_key_follows_topology(self, tmp_path):
        """A loopback announcer is in 127.0.0.0/8's rack: the reply's ``near``
        lists that CIDR only; a tracker without --topology sends no ``near``."""
        topo = tmp_path / "topology"
        topo.write_text("127.0.0.0/8 dc1/row1/rack1\n10.9.0.0/16 dc1/row1/rack2\n")
        for extra, expected in ((["--topology", str(topo)], [b"127.0.0.0/8"]), ([], None)):
            port = free_port()
            server = Server([venv_bin("murder"), "tracker", "--port", str(port), "--bind",
                             "127.0.0.1", "--dfile", "", *extra], port, tmp_path)
            try:
                reply = server.announce(1, left="5")
            finally:
                server.stop()
            assert reply.get(b"near") == expected, server.output()

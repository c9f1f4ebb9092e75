"""The run lifecycle (murder/peer/run.py) on a fake reactor: exit status, status fd,
linger, what is left on disk.

No sockets, no threads: a ``MemoryReactorClock`` is the reactor (``listenTCP``
is recorded), :class:`murder.testing.FakeTrackerHTTP` answers announces, and
blocking work runs inline.  A real in-memory seeder swarm feeds the peer's
swarm over iosim where a download is needed.
"""

from __future__ import annotations

import os
import random

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from murder.errors import TrackerUnreachable
from murder.peer.options import RunConfig
from murder.peer.run import SwarmRun
from murder.peer.session import Swarm, SwarmConfig
from murder.peer.wire import Bitfield
from murder.testing import FakeTrackerHTTP, MemoryStorage, build_torrent, connect_swarms

PAYLOAD = bytes(range(256)) * 700  # 179,200 bytes: 6 pieces of 32 KiB


def inline(f):
    """Blocking work run at once (the real run uses the reactor's thread pool)."""
    return defer.maybeDeferred(f)


class Fixture:
    """One run, its reactor, its tracker, its status pipe."""

    def __init__(self, tmp_path, role: str = "peer", **overrides) -> None:
        self.meta, self.payload = build_torrent(PAYLOAD, name="payload", piece_length=2**15)
        self.reactor = MemoryReactorClock()
        self.http = FakeTrackerHTTP()
        self.read_fd, write_fd = os.pipe()
        if role == "seeder":
            path = tmp_path / "seed" / "payload"
            path.parent.mkdir()
            path.write_bytes(self.payload)
        else:
            path = tmp_path / "payload"
        self.path = str(path)
        settings = dict(meta=self.meta, role=role, path=self.path, port=0, bind="", ip=None,
                        tracker_timeout=5.0, trust=(), ca=None, quiet=True,
                        swarm=SwarmConfig(stall_timeout=20.0), status_fd=write_fd,
                        progress_interval=60.0)
        settings.update(overrides)
        self.config = RunConfig(**settings)
        self.run = SwarmRun(self.config, self.reactor, http=self.http, blocking=inline)
        self.codes: list[int] = []
        self.run.finished.addCallback(self.codes.append)

    def start(self) -> None:
        """Start the run and let its first announce go out."""
        self.run.start()
        self.reactor.advance(0)

    def status(self) -> str:
        """The status line written so far ('' if none); the fd is closed after it."""
        os.set_blocking(self.read_fd, False)
        try:
            return os.read(self.read_fd, 4096).decode()
        except BlockingIOError:
            return ""

    def feed_from_seeder(self) -> None:
        """Connect an in-memory seeder to the run's swarm and move every byte."""
        seeder = Swarm(self.meta, MemoryStorage(self.meta, self.payload),
                       Bitfield(self.meta.num_pieces, full=True), self.reactor,
                       peer_id=b"-MU0100-seederseeder", rng=random.Random(1))
        _, _, pump = connect_swarms(seeder, self.run.swarm, clock=self.reactor)
        pump.flush()

    def close(self) -> None:
        os.close(self.read_fd)


@pytest.fixture
def make(tmp_path):
    made: list[Fixture] = []

    def factory(**kw) -> Fixture:
        made.append(Fixture(tmp_path, **kw))
        return made[-1]

    yield factory
    for f in made:
        f.close()


class PeerRunTests:
    """A peer's run from start to exit status."""

    def test_listens_and_announces_started(self, make):
        """Starting listens on the configured port and announces ``started``."""
        f = make()
        f.start()
        assert [p[0] for p in f.reactor.tcpServers] == [0]
        assert f.http.events() == ["started"]
        assert f.run.exit_code is None

    def test_complete_then_seed_time_then_exit_0(self, make):
        """A verified download: payload in place, status 'complete PATH', the
        ``completed`` announce, then exit 0 after exactly seed_time seconds."""
        f = make(seed_time=30.0)
        f.start()
        f.feed_from_seeder()
        assert open(f.path, "rb").read() == f.payload
        assert not os.path.exists(f.path + ".part")
        assert f.status() == f"complete {f.path}\n"
        f.reactor.advance(0)
        assert "completed" in f.http.events()
        f.reactor.advance(29.9)
        assert f.codes == []
        f.reactor.advance(0.2)
        assert f.codes == [0] and f.run.exit_code == 0

    def test_linger_until_swarm_done(self, make):
        """With seed_until_swarm_done the run lingers while the tracker counts
        leechers, and exits 0 once a fresh reply counts none."""
        f = make(seed_until_swarm_done=True, max_linger=300.0)
        f.http.incomplete = 3
        f.start()
        f.feed_from_seeder()
        for _ in range(20):
            f.reactor.advance(0.5)
        assert f.codes == []
        f.http.incomplete = 0
        for _ in range(10):
            f.reactor.advance(0.5)
        assert f.codes == [0]

    def test_linger_is_bounded(self, make):
        """Leechers that never finish do not keep a peer past max_linger."""
        f = make(seed_until_swarm_done=True, max_linger=5.0)
        f.http.incomplete = 3
        f.start()
        f.feed_from_seeder()
        for _ in range(8):
            f.reactor.advance(0.5)
        assert f.codes == []
        for _ in range(6):
            f.reactor.advance(0.5)
        assert f.codes == [0]

    def test_tracker_unreachable_fails_and_discards(self, make):
        """No tracker answers within tracker_timeout: exit with the error's
        status, 'failed …' on the status fd, no partial file left."""
        f = make()
        f.http.failure = ConnectionRefusedError("refused")
        f.start()
        for _ in range(40):
            f.reactor.advance(0.5)
        assert f.codes == [TrackerUnreachable.exit_code]
        assert f.status().startswith("failed ")
        assert not os.path.exists(f.path + ".part") and not os.path.exists(f.path)

    def test_stall_fails_the_run(self, make):
        """No source ever sends a piece: the stall timeout fails the run (exit
        non-zero), and the partial download is discarded."""
        f = make()
        f.start()
        for _ in range(100):
            f.reactor.advance(0.25)
        assert f.codes and f.codes[0] != 0
        assert "failed" in f.status()
        assert not os.path.exists(f.path + ".part")

    def test_stopped_from_outside_keeps_part_for_resume(self, make):
        """SIGTERM before completion: exit 1, 'failed interrupted …', the
        .part file stays so a new run resumes."""
        f = make()
        f.start()
        result = []
        f.run.stop().addCallback(result.append)
        assert result == [None]
        assert f.run.exit_code == 1
        assert f.status() == "failed interrupted before the download completed\n"
        assert os.path.exists(f.path + ".part")
        assert "stopped" in f.http.events()


class SeederRunTests:
    """A seeder's run."""

    def test_seeder_verifies_serves_and_stops_with_0(self, make):
        """A seeder verifies its payload, announces, and a stop from outside is a
        clean exit 0 (its job is to serve until stopped)."""
        f = make(role="seeder", status_fd=None)
        f.start()
        assert f.run.swarm is not None and f.run.swarm.is_seed
        assert f.http.events() == ["started"]
        f.run.stop()
        assert f.run.exit_code == 0
        assert f.http.events()[-1] == "stopped"

    def test_seeder_with_wrong_payload_fails(self, make, tmp_path):
        """A payload that fails verification ends the run non-zero before any announce."""
        f = make(role="seeder", status_fd=None)
        with open(f.path, "r+b") as out:
            out.write(b"\xff" * 10)
        f.start()
        assert f.codes and f.codes[0] != 0
        assert f.http.urls == []

"""The live dashboard in a real headless Chromium during a real local swarm.

Tracker, seeder and seven peers run as real processes on 127.0.0.1; the
browser (Debian ``chromium`` driven through Debian's ``chromedriver``, never
a downloaded one) polls the tracker like a person's laptop would.  Every
process is started here and killed by PID at the end; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request

import pytest
from conftest import free_port, venv_bin
from test_swarm_integration import (
    Processes,
    make_torrent,
    random_file,
    tracker_knows_seeder,
    wait_until,
)

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
STALL_AFTER = 3
#: All rows of the peer table, read in one script so a redraw cannot interleave.
ROWS_JS = """return Array.from(document.querySelectorAll('tr[data-host]')).map(
    r => [r.dataset.host, r.className, r.querySelector('td.pct').textContent]);"""


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium under selenium, from the Debian packages only."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip package selenium missing")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} missing (Debian packages chromium, chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    # An explicit driver path: selenium-manager never looks for (or fetches) one.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()
        pid = getattr(service.process, "pid", None)
        if service.process is not None and service.process.poll() is None and pid:
            os.kill(pid, signal.SIGKILL)


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=2) as r:
        return json.load(r)


class DashboardBrowserTests:
    """What a person sees on the dashboard while a deploy runs."""

    def test_live_swarm(self, tmp_path, browser):
        """Every host's row reaches 100 %; a SIGSTOPped host is flagged stalled in time."""
        procs = Processes(tmp_path)
        try:
            self._deploy(tmp_path, procs, browser)
        finally:
            for proc, _ in procs.procs:  # a stopped process must be resumed to die cleanly
                if proc.poll() is None:
                    try:
                        os.kill(proc.pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
            procs.kill_all()

    def _deploy(self, tmp_path, procs: Processes, browser) -> None:
        murder = venv_bin("murder")
        port = free_port()
        procs.start("tracker", murder, "tracker", "--port", str(port), "--bind", "127.0.0.1",
                    "--dfile", "", "--leecher-interval", "1", "--stall-after", str(STALL_AFTER))
        payload = random_file(tmp_path / "seed" / "release.bin", 3 * 2**20 + 4321)
        torrent = tmp_path / "release.torrent"
        meta = make_torrent(payload, f"http://127.0.0.1:{port}/announce", torrent)
        seeder = procs.start("seeder", murder, "seed", "--torrent", str(torrent), "--file",
                             str(payload), "--ip", "127.0.0.1", "--bind", "127.0.0.1")
        wait_until(lambda: seeder.poll() is not None or tracker_knows_seeder(port, meta.info_hash),
                   20, "the seeder to announce")
        assert seeder.poll() is None, procs.output(seeder)

        browser.get(f"http://127.0.0.1:{port}/swarm?info_hash={meta.info_hash.hex()}")

        def peer(name: str, *extra: str) -> subprocess.Popen:
            dest = tmp_path / name
            dest.mkdir()
            return procs.start(name, murder, "peer", "--torrent", str(torrent),
                               "--destination", str(dest), "--ip", "127.0.0.1",
                               "--bind", "127.0.0.1", "--seed-time", "1",
                               "--tracker-timeout", "10", *extra)

        # The slow host downloads at 256 KiB/s: frozen part-way, it must stand out.
        slow_port = free_port()
        slow = peer("slow", "--port", str(slow_port), "--max-download-rate", "256K")
        slow_host = f"127.0.0.1:{slow_port}"

        def rows() -> dict[str, tuple[str, str]]:
            return {host: (cls, pct) for host, cls, pct in browser.execute_script(ROWS_JS)}

        def slow_row_downloading():
            row = rows().get(slow_host)
            return row and row[0] == "downloading" and row[1] not in ("0.0 %", "?")
        wait_until(slow_row_downloading, 20, "the slow host to show progress")
        os.kill(slow.pid, signal.SIGSTOP)
        # Flagged within stall_after plus one leecher interval, one poll and the
        # 0.5 s answer reuse, with slack for a loaded machine.
        wait_until(lambda: rows().get(slow_host, ("",))[0] == "stalled", STALL_AFTER + 8,
                   "the frozen host to be flagged stalled")
        # Only the frozen host stands out: the seeder is not flagged.
        assert browser.execute_script(
            "return document.querySelectorAll('tr.stalled').length") == 1
        browser.save_screenshot(str(tmp_path / "dashboard-stalled.png"))

        # Resumed before the others start: while it is frozen the seeder's upload
        # slot waits on it, which would stall every other host too.
        os.kill(slow.pid, signal.SIGCONT)
        fast = [peer(f"peer{i}") for i in range(6)]
        for p in fast:
            assert procs.wait(p, 40) == 0, procs.output(p)
        assert procs.wait(slow, 60) == 0, procs.output(slow)

        def all_done():
            shown = rows()
            leechers = {h: v for h, v in shown.items() if v[0] != "seeder"}
            return len(leechers) == 7 and all(
                cls == "complete" and pct == "100.0 %" for cls, pct in leechers.values())
        wait_until(all_done, 10, "every host's row at 100 %")
        page = browser.find_element("css selector", "main").text
        assert "7 / 7" in page  # hosts done
        browser.save_screenshot(str(tmp_path / "dashboard-done.png"))
        for name in ("dashboard-stalled.png", "dashboard-done.png"):
            assert (tmp_path / name).stat().st_size > 10_000
        doc = status(port)
        assert doc["version"] == 1 and doc["stall_after"] == STALL_AFTER
        # The overview page shows the swarm as done too.
        browser.get(f"http://127.0.0.1:{port}/")
        wait_until(lambda: "7 / 7" in browser.find_element("css selector", "main").text, 10,
                   "the overview to show 7 of 7 hosts done")

    def test_two_thousand_hosts(self, tmp_path, browser):
        """At 2,000 hosts the grid shows every host and the table stays bounded."""
        from twisted.internet.task import Clock

        from murder.tracker.announce_codec import AnnounceRequest
        from murder.tracker.store import PeerStore, save_dfile

        # A tracker state of 2,000 hosts (a fifth done, the rest part-way) and a
        # seeder, loaded from a dfile: the page is what is tested, not announcing.
        store = PeerStore(Clock())
        info_hash, size = b"\x42" * 20, 64 * 2**20
        for n in range(2001):
            left = 0 if n % 5 == 0 else size - (n * 7919) % size
            event = "completed" if n and not left else "started"
            store.announce(AnnounceRequest(info_hash, b"%020d" % n,
                                           f"10.0.{n >> 8}.{n & 255}", 6881, 0,
                                           size - left, left, event, True, False, 0))
        save_dfile(store, str(tmp_path / "state"))
        procs = Processes(tmp_path)
        try:
            port = free_port()
            procs.start("tracker", venv_bin("murder"), "tracker", "--port", str(port),
                        "--bind", "127.0.0.1", "--dfile", str(tmp_path / "state"),
                        "--stall-after", "600")
            wait_until(lambda: tracker_has_peers(port, 2001), 20, "the tracker to load the dfile")
            browser.get(f"http://127.0.0.1:{port}/swarm?info_hash={info_hash.hex()}")
            wait_until(lambda: browser.execute_script(
                "return document.querySelectorAll('tr[data-host]').length") == 500, 20,
                "the table to show its first 500 hosts")
            text = browser.find_element("css selector", "main").text
            assert "400 / 2000" in text and "1501 more hosts" in text
            grid = browser.execute_script(
                "var c = document.getElementById('grid'); "
                "return [+c.dataset.per, +c.dataset.cell, c.clientWidth, c.clientHeight];")
            per, cell, width, height = grid
            assert cell >= 6 and per * cell == width
            assert height == -(-2001 // per) * cell  # every host has its cell
            assert height <= 900  # fits a laptop screen
            browser.save_screenshot(str(tmp_path / "dashboard-2000.png"))
            assert (tmp_path / "dashboard-2000.png").stat().st_size > 10_000
        finally:
            procs.kill_all()


def tracker_has_peers(port: int, count: int) -> bool:
    try:
        return status(port)["totals"]["peers"] >= count
    except OSError:
        return False

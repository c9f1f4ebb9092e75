"""``murder keygen``, ``murder make-torrent --sign`` and ``murder verify`` end to end."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import venv_bin

from murder import metainfo, trust

ANNOUNCE = "http://127.0.0.1:8998/announce"


@pytest.fixture(autouse=True)
def _no_ambient_trust(monkeypatch):
    """The developer's own MURDER_TRUST must not leak into these tests."""
    monkeypatch.delenv(trust.TRUST_ENV, raising=False)


@pytest.mark.integration
class InstalledCommandTests:
    """The installed ``murder`` script signs and verifies in real processes."""

    def _run(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {k: v for k, v in os.environ.items() if k != trust.TRUST_ENV}
        full_env.update(env or {})
        return subprocess.run([venv_bin("murder"), *args], capture_output=True, text=True,
                              timeout=60, env=full_env)

    def test_keygen_sign_verify(self, tmp_path, tmp_payload):
        """keygen, make-torrent --sign, verify --trust / MURDER_TRUST: 0; other key: 1."""
        payload = tmp_payload(os.urandom(200_000), name="release.tar")
        prefix = str(tmp_path / "deploy")
        made = self._run("keygen", "--out", prefix)
        assert made.returncode == 0, made.stderr
        fp = re.search(r"fingerprint: ([0-9a-f]{16})", made.stdout).group(1)
        torrent = str(tmp_path / "release.torrent")
        made = self._run("make-torrent", "--announce", ANNOUNCE, "-q", "--sign", prefix,
                         "-o", torrent, str(payload))
        assert made.returncode == 0, made.stderr
        info_hash = metainfo.load(torrent).info_hash.hex()

        ok = self._run("verify", "--trust", prefix + ".pub", torrent)
        assert (ok.returncode, ok.stdout, ok.stderr) == \
            (0, f"{torrent}: signed by {fp}, info hash {info_hash}\n", "")
        ok = self._run("verify", torrent, env={trust.TRUST_ENV: prefix + ".pub"})
        assert ok.returncode == 0, ok.stderr

        assert self._run("keygen", "--out", str(tmp_path / "other")).returncode == 0
        bad = self._run("verify", "--trust", str(tmp_path / "other.pub"), torrent)
        assert bad.returncode == 1
        assert bad.stdout == ""
        assert bad.stderr == (f"murder verify: untrusted torrent: signed by unknown key "
                              f"{fp} (not among 1 trusted key)\n")

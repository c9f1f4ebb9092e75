"""Start-up cost controls of the ``murder`` command (murder/_lazy.py, cli.main).

Every host of a deploy starts a peer at once; what these tests pin down is
that the modules Twisted imports only for deprecated aliases are not loaded,
and that they still work if something does use them.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from murder import cli
sys.modules["OpenSSL"] = None  # as a peer without TLS does (peer/tap.py)
from twisted.internet import defer, reactor  # what a peer imports
print(type(sys.modules["http.cookiejar"]).__name__,
      [m for m in ("urllib.request", "http.client", "email.utils") if m in sys.modules])
import http.cookiejar
print(http.cookiejar.CookieJar.__name__, "urllib.request" in sys.modules)
"""


def test_cookiejar_chain_not_loaded_until_used():
    """After importing the CLI and the reactor, http.cookiejar is a lazy module
    and urllib.request/http.client/email are not loaded; first use loads it."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["_LazyModule []", "CookieJar True"]


def test_main_leaves_gc_enabled(capsys):
    """Whatever path cli.main takes, it leaves the cyclic GC enabled (it turns
    it off only while the command's modules load)."""
    import gc

    from murder import cli

    assert cli.main(["--version"]) == 0
    assert gc.isenabled()
    assert cli.main(["make-torrent", "--bogus"]) == 2
    assert gc.isenabled()

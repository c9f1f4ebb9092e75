"""Start-up tricks, all in one place: what makes a murder process start cheaply.

Why: every host of a deploy starts a ``murder peer`` at the same moment, so
its start-up CPU is paid once per host and, on shared machines, all at once.
``twisted.python.compat`` imports ``http.cookiejar`` only to re-export it as a
deprecated alias; that module drags in ``urllib.request``, ``http.client``,
``email`` and ``calendar``: about a quarter of a peer's import time
(``python -X importtime``; see bench/README.md).  Here those modules are
registered with :class:`importlib.util.LazyLoader` (the recipe in the
importlib documentation): the import succeeds at once, and the module really
loads on first attribute access, if any code ever touches it.

The other tricks: the cyclic GC is off while modules load and the objects
they create are frozen out of later collections (:func:`imports_done`); a
peer that will never speak TLS keeps pyOpenSSL out (:func:`skip_tls_stack`);
a tracker makes its GC run rarely (:func:`tune_gc_for_tracker`).
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from typing import Iterable

#: Imported by our dependencies at start-up, never used by the peer, seeder
#: or tracker at run time.
UNUSED_AT_RUNTIME = ("http.cookiejar",)


def defer_imports(names: tuple[str, ...] = UNUSED_AT_RUNTIME) -> None:
    """Register ``names`` as lazily loaded modules (idempotent, best effort)."""
    for name in names:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or spec.loader is None:
            continue
        loader = importlib.util.LazyLoader(spec.loader)
        spec.loader = loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def imports_done() -> None:
    """Imports are done: keep their objects out of every later collection.

    The command line turns the cyclic GC off while a command's modules load
    (see :func:`murder.cli.main`): the thousands of objects imports create
    live as long as the process (~5% of a peer's start-up CPU).
    """
    gc.freeze()
    gc.enable()


def skip_tls_stack(tracker_urls: Iterable[str], ca: str | None) -> None:
    """Keep pyOpenSSL out of a process that will never speak TLS.

    Twisted's TCP module imports pyOpenSSL (and with it ``cryptography`` and
    ``service_identity``) only to offer STARTTLS; that is about a quarter of a
    peer's start-up CPU, paid by every host of a deploy at the same moment.
    A missing module makes Twisted fall back to plain TCP, which is all a peer
    with ``http://`` trackers and no ``--ca`` uses.  Signed torrents verify
    with ``cryptography`` directly, which stays importable.
    """
    if ca is None and all(u.startswith("http://") for u in tracker_urls) \
            and "twisted.internet.tcp" not in sys.modules:
        sys.modules.setdefault("OpenSSL", None)  # type: ignore[arg-type]


#: Young-generation threshold of the cyclic GC in a tracker process (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc_for_tracker() -> None:
    """Make the cyclic garbage collector run rarely in a tracker process.

    A full store holds tens of thousands of Peer objects, and a full
    collection walks them all: 85 ms at 50,000 peers, measured in-process on
    the benchmark machine, which alone breaks the 20 ms p99 target.  Announces
    allocate few GC-tracked objects and create no reference cycles (reference
    counting frees them), so a young generation of 10,000 objects (a pause of
    a few ms at most) makes full collections about 15 times rarer and only
    delays the collection of rare cyclic garbage.  Process-wide, hence called
    by the process entry points only.
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)

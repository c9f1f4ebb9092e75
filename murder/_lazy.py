"""Lazy loading of standard-library modules a short-lived process never uses.

Why: every host of a deploy starts a ``murder peer`` at the same moment, so
its start-up CPU is paid once per host and, on shared machines, all at once.
``twisted.python.compat`` imports ``http.cookiejar`` only to re-export it as a
deprecated alias; that module drags in ``urllib.request``, ``http.client``,
``email`` and ``calendar``: about a quarter of a peer's import time
(``python -X importtime``; see bench/README.md).  Here those modules are
registered with :class:`importlib.util.LazyLoader` (the recipe in the
importlib documentation): the import succeeds at once, and the module really
loads on first attribute access, if any code ever touches it.
"""

from __future__ import annotations

import importlib.util
import sys

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

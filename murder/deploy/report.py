"""The JSON report of a deploy (``murder deploy --report FILE``).

Per host: result, failure kind and reason, times (epoch seconds) and bytes;
written atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from murder.deploy import core

if TYPE_CHECKING:
    from murder.deploy.orchestrator import Deployment


def write_report(path: str, deployment: Deployment, finished: float) -> None:
    """The JSON report, written atomically (a reader never sees half of it)."""
    meta = deployment.meta
    wall = time.time() - (deployment.reactor.seconds() - deployment.started)
    hosts = []
    for r in deployment.records:
        entry = r.report()
        for key in ("started", "completed"):  # reactor seconds → epoch
            if entry[key] is not None:
                entry[key] = wall + (entry[key] - deployment.started)
        hosts.append(entry)
    doc: dict[str, Any] = {
        "payload": deployment.config.payload, "dest": deployment.config.dest,
        "info_hash": meta.info_hash.hex() if meta else None,
        "bytes": meta.total_length if meta else None,
        "started": wall, "elapsed": finished - deployment.started,
        "ok": all(r.state == core.VERIFIED for r in deployment.records),
        "interrupted": deployment.interrupted_by,
        "hosts": hosts,
    }
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


__all__ = ["write_report"]

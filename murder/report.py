"""``murder report FILE --html OUT | --png OUT``: a deploy report as a picture.

``murder deploy --report FILE`` writes one JSON document per deploy::

    {"started": <unix time>, "finished": <unix time>,
     "hosts": [{"host": "web12", "result": "ok" | "failed", "reason": str | null,
                "started": <unix time>, "completed": <unix time> | null,
                "uploaded": <bytes>, "downloaded": <bytes>}, ...]}

The form ``murder deploy`` writes today is read too: ``"elapsed"`` (seconds)
instead of ``"finished"``, ``"bytes_up"``/``"bytes_down"`` instead of
``"uploaded"``/``"downloaded"``, and ``"result"`` ``"verified"`` (ok) or
another state (failed: ``"failed"``, ``"unfinished"``; ``"kind"`` stands in
for a missing reason).  Other keys are ignored.

This turns it into a completion-time CDF (share of all hosts done, against
seconds since the deploy started), with failed hosts marked as red crosses
(at their ``completed`` time when the deploy recorded one, else at the end),
plus a host table, slowest and failed first.  ``--html`` is one
self-contained page (inline SVG, no script, no external asset);
``--png`` needs matplotlib (the ``bench`` extra).  Outputs are written
atomically.
"""

from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass
from typing import Any

from twisted.python import usage

from murder.errors import MurderError
from murder.metainfo import write_atomic


class ReportError(MurderError):
    """A deploy report cannot be read or drawn (kept here, beside its only user)."""

    exit_code = 1


@dataclass(frozen=True)
class HostResult:
    """One host's line of a deploy report."""

    host: str
    result: str
    reason: str | None
    started: float | None
    completed: float | None
    uploaded: int
    downloaded: int


@dataclass(frozen=True)
class DeployReport:
    """A whole deploy report (see the module docstring)."""

    started: float
    finished: float
    hosts: tuple[HostResult, ...]

    def done_times(self) -> list[float]:
        """Seconds from the deploy's start to each successful host's completion, sorted."""
        return sorted(max(0.0, h.completed - self.started) for h in self.hosts
                      if h.result == "ok" and h.completed is not None)

    def failure_times(self) -> list[float]:
        """Where each failed host is marked: its ``completed`` time, else the deploy's end."""
        end = max(0.0, self.finished - self.started)
        return sorted(max(0.0, h.completed - self.started) if h.completed is not None else end
                      for h in self.hosts if h.result != "ok")


def _number(value: Any, where: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReportError(f"{where}: expected a number, not {value!r}")
    return float(value)


def parse_report(data: bytes | str) -> DeployReport:
    """Validate a report document; :class:`ReportError` names the first bad field."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ReportError(f"not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("hosts"), list):
        raise ReportError('not a deploy report: no "hosts" list')
    started = _number(doc.get("started"), "started")
    assert started is not None
    if "finished" not in doc and "elapsed" in doc:
        elapsed = _number(doc.get("elapsed"), "elapsed")
        finished: float | None = started + (elapsed or 0.0)
    else:
        finished = _number(doc.get("finished"), "finished")
    hosts = []
    for i, h in enumerate(doc["hosts"]):
        where = f"hosts[{i}]"
        if not isinstance(h, dict) or not isinstance(h.get("host"), str):
            raise ReportError(f'{where}: expected an object with a "host" string')
        result = h.get("result")
        if not isinstance(result, str) or not result:
            raise ReportError(f'{where}.result: expected "ok" or "failed", not {result!r}')
        reason = h.get("reason")
        if reason is None and isinstance(h.get("kind"), str):
            reason = h["kind"]
        if reason is not None and not isinstance(reason, str):
            raise ReportError(f"{where}.reason: expected a string or null")
        counts = []
        for key, alias in (("uploaded", "bytes_up"), ("downloaded", "bytes_down")):
            value = h.get(key, h.get(alias, 0))
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ReportError(f"{where}.{key}: expected a byte count, not {value!r}")
            counts.append(value)
        if result not in ("ok", "failed", "verified"):
            reason = reason or result  # e.g. "unfinished"
        hosts.append(HostResult(
            h["host"], "ok" if result in ("ok", "verified") else "failed", reason,
            _number(h.get("started"), f"{where}.started", optional=True),
            _number(h.get("completed"), f"{where}.completed", optional=True), *counts))
    assert finished is not None
    return DeployReport(started, finished, tuple(hosts))


def load_report(path: str) -> DeployReport:
    """Read and validate the report at ``path``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ReportError(f"cannot read {path}: {e.strerror or e}") from None
    return parse_report(data)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1)]


def summary(report: DeployReport) -> dict[str, Any]:
    """Counts and completion quantiles (seconds since start) of ``report``."""
    done = report.done_times()
    return {"hosts": len(report.hosts), "ok": len(done),
            "failed": sum(h.result != "ok" for h in report.hosts),
            "p50": _quantile(done, 0.5), "p90": _quantile(done, 0.9),
            "max": done[-1] if done else None,
            "duration": max(0.0, report.finished - report.started),
            "uploaded": sum(h.uploaded for h in report.hosts),
            "downloaded": sum(h.downloaded for h in report.hosts)}


def cdf_svg(report: DeployReport, width: int = 820, height: int = 360) -> str:
    """The completion-time CDF as an SVG element (share of all hosts, so failures show)."""
    done, failed = report.done_times(), report.failure_times()
    total = max(1, len(report.hosts))
    left, right, top, bottom = 52, 16, 14, 40
    tmax = max([1e-9, report.finished - report.started, *done, *failed])
    pw, ph = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + pw * t / tmax

    def y(frac: float) -> float:
        return top + ph * (1 - frac)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fcfcfc" stroke="#ddd"/>']
    for frac in (0, 0.25, 0.5, 0.75, 1):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(frac):.1f}" y2="{y(frac):.1f}" '
                   f'stroke="#eee"/><text x="{left - 6}" y="{y(frac) + 4:.1f}" '
                   f'text-anchor="end" fill="#555">{frac * 100:.0f}%</text>')
    for i in range(6):
        t = tmax * i / 5
        out.append(f'<text x="{x(t):.1f}" y="{top + ph + 16}" text-anchor="middle" '
                   f'fill="#555">{t:.1f} s</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" fill="#333">'
               f'seconds since the deploy started</text>')
    path = [f"M{x(0):.1f},{y(0):.1f}"]
    for k, t in enumerate(done, 1):
        path.append(f"H{x(t):.1f}V{y(k / total):.1f}")
    path.append(f"H{x(tmax):.1f}")
    out.append(f'<path d="{"".join(path)}" fill="none" stroke="#2e9d4b" stroke-width="2"/>')
    for k, t in enumerate(failed):
        cx, cy = x(t), top + ph - 8 - 9 * (k % 8)
        out.append(f'<path class="failure" d="M{cx - 4:.1f},{cy - 4:.1f}l8,8m0,-8l-8,8" '
                   f'stroke="#d62f2f" stroke-width="2"/>')
    if failed:
        out.append(f'<text x="{left + pw - 4}" y="{top + 14}" text-anchor="end" fill="#d62f2f">'
                   f'× {len(failed)} failed</text>')
    out.append("</svg>")
    return "".join(out)


def render_html(report: DeployReport, title: str = "Deploy report") -> str:
    """One self-contained HTML page: summary, CDF, and every host (failed and slowest first)."""
    e = html.escape
    s = summary(report)

    def secs(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f} s"

    def order(h: HostResult) -> tuple[bool, float]:
        took = (h.completed - report.started) if h.completed is not None else math.inf
        return (h.result == "ok", -took)

    rows = []
    for h in sorted(report.hosts, key=order):
        took = None if h.completed is None else h.completed - report.started
        rows.append(
            f'<tr class="{"ok" if h.result == "ok" else "failed"}"><td>{e(h.host)}</td>'
            f"<td>{e(h.result)}</td><td class=n>{secs(took)}</td>"
            f"<td class=n>{_bytes(h.uploaded)}</td><td class=n>{_bytes(h.downloaded)}</td>"
            f"<td>{e(h.reason or '')}</td></tr>")
    return "\n".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>",
        "body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#1d1d1d}",
        "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;"
        "text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}",
        "tr.failed td{background:#ffe3e3}.facts span{margin-right:22px}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p class=facts><span><b>{s['ok']}</b> of {s['hosts']} hosts done</span>"
        f"<span><b>{s['failed']}</b> failed</span><span>p50 <b>{secs(s['p50'])}</b></span>"
        f"<span>p90 <b>{secs(s['p90'])}</b></span><span>slowest <b>{secs(s['max'])}</b></span>"
        f"<span>deploy <b>{secs(s['duration'])}</b></span>"
        f"<span>uploaded <b>{_bytes(s['uploaded'])}</b></span></p>",
        "<h2>Completion over time</h2>", cdf_svg(report),
        "<h2>Hosts</h2><table><tr><th>host</th><th>result</th><th>done after</th>"
        "<th>uploaded</th><th>downloaded</th><th>reason</th></tr>", *rows, "</table>",
        "</body></html>"])


def render_png(report: DeployReport, title: str = "Deploy report") -> bytes:
    """The CDF as a PNG, drawn with matplotlib (``pip install 'murder[bench]'``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError("--png needs matplotlib (pip install 'murder[bench]'); "
                          "--html needs nothing") from None
    done, failed = report.done_times(), report.failure_times()
    total = max(1, len(report.hosts))
    fig, ax = plt.subplots(figsize=(8, 4))
    tmax = max([1e-9, report.finished - report.started, *done, *failed])
    ax.step([0.0, *done, tmax],
            [0.0, *[100 * k / total for k in range(1, len(done) + 1)], 100 * len(done) / total],
            where="post", color="#2e9d4b", label=f"{len(done)} done")
    if failed:
        ax.plot(failed, [2] * len(failed), "x", color="#d62f2f", markersize=8, mew=2,
                label=f"{len(failed)} failed")
    ax.set(xlabel="seconds since the deploy started", ylabel="% of hosts done",
           ylim=(0, 101), xlim=(0, tmax * 1.04),
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


class ReportOptions(usage.Options):
    """``murder report FILE (--html OUT | --png OUT)``."""

    synopsis = "murder report FILE [--html OUT.html] [--png OUT.png] [--title TEXT]"
    longdesc = ("Draw a `murder deploy --report` JSON as a completion-time CDF per host, "
                "failures marked: a self-contained HTML page and/or a PNG (needs matplotlib).")
    optParameters = [
        ["html", None, None, "Write a self-contained HTML page (inline SVG) here."],
        ["png", None, None, "Write a PNG here (needs matplotlib)."],
        ["title", None, "Deploy report", "Title of the page or picture."],
    ]

    def parseArgs(self, path: str) -> None:  # type: ignore[override]  # noqa: N802 (Twisted API)
        self["report"] = path

    def postOptions(self) -> None:  # noqa: N802 (Twisted API)
        if not self["html"] and not self["png"]:
            raise usage.UsageError("give --html OUT and/or --png OUT")


def _options_first(argv: list[str]) -> list[str]:
    """``FILE --html OUT`` → ``--html OUT FILE``: usage.Options stops at the first argument."""
    takes_value = {f"--{name}" for name, *_ in ReportOptions.optParameters}
    options: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i + 1:])
            break
        if arg in takes_value and i + 1 < len(argv):
            options += argv[i:i + 2]
            i += 2
            continue
        (options if arg.startswith("-") and arg != "-" else rest).append(arg)
        i += 1
    return options + rest


def main(command: str, argv: list[str]) -> int:
    """Entry point used by :mod:`murder.cli` for ``report``."""
    options = ReportOptions()
    options.parseOptions(_options_first(argv))
    report = load_report(options["report"])
    outputs = []
    if options["png"]:
        outputs.append((options["png"], render_png(report, options["title"])))
    if options["html"]:
        outputs.append((options["html"], render_html(report, options["title"]).encode()))
    for path, data in outputs:
        try:
            write_atomic(path, data)
        except OSError as e:
            raise ReportError(f"cannot write {path}: {e.strerror or e}") from None
        print(f"wrote {path}")
    return 0

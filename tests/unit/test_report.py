"""``murder report``: a deploy --report JSON turned into a completion-time CDF."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from murder import cli
from murder.report import ReportError, parse_report, render_html, summary

DOC = {"started": 1000.0, "finished": 1030.0, "hosts": [
    {"host": "web1", "result": "ok", "reason": None, "started": 1000.5, "completed": 1010.0,
     "uploaded": 100, "downloaded": 2000},
    {"host": "web2", "result": "ok", "reason": None, "started": 1000.5, "completed": 1020.0,
     "uploaded": 0, "downloaded": 2000},
    {"host": "<b>web3</b>", "result": "failed", "reason": "ssh: <refused>", "started": 1000.5,
     "completed": None, "uploaded": 0, "downloaded": 0},
    {"host": "web4", "result": "failed", "reason": "timed out", "started": 1000.5,
     "completed": 1015.0, "uploaded": 0, "downloaded": 10}]}


def write(tmp_path, doc) -> str:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


class ParseTests:
    """The agreed schema is validated field by field."""

    def test_times(self):
        """Completion times are seconds since the deploy's start; failures at their time or the end."""
        report = parse_report(json.dumps(DOC))
        assert report.done_times() == [10.0, 20.0]
        assert report.failure_times() == [15.0, 30.0]
        s = summary(report)
        assert (s["hosts"], s["ok"], s["failed"], s["p50"], s["max"]) == (4, 2, 2, 10.0, 20.0)

    def test_deploy_form(self):
        """The form murder deploy writes (elapsed, bytes_up/down, verified/unfinished) reads too."""
        doc = {"started": 1000.0, "elapsed": 30.0, "ok": False, "hosts": [
            {"host": "a", "state": "verified", "result": "verified", "kind": None,
             "reason": None, "started": 1000.0, "completed": 1012.0, "bytes_up": 7,
             "bytes_down": 9, "attempts": 1},
            {"host": "b", "state": "failed", "result": "failed", "kind": "unreachable",
             "reason": None, "started": 1000.0, "completed": None, "bytes_up": 0,
             "bytes_down": 0},
            {"host": "c", "state": "running", "result": "unfinished", "kind": None,
             "reason": None, "started": 1000.0, "completed": None}]}
        report = parse_report(json.dumps(doc))
        assert report.finished == 1030.0 and report.done_times() == [12.0]
        assert [(h.result, h.reason, h.uploaded, h.downloaded) for h in report.hosts] == [
            ("ok", None, 7, 9), ("failed", "unreachable", 0, 0), ("failed", "unfinished", 0, 0)]

    @pytest.mark.parametrize("mutate, message", [
        (lambda d: d.pop("hosts"), 'no "hosts" list'),
        (lambda d: d.update(started="x"), "started: expected a number"),
        (lambda d: d["hosts"][0].update(result=None), "hosts[0].result"),
        (lambda d: d["hosts"][1].update(uploaded=-1), "hosts[1].uploaded"),
        (lambda d: d["hosts"][1].update(completed=True), "hosts[1].completed"),
        (lambda d: d["hosts"][2].pop("host"), 'hosts[2]: expected an object with a "host"'),
    ])
    def test_errors(self, mutate, message):
        """Each malformed field is named in the error."""
        doc = json.loads(json.dumps(DOC))
        mutate(doc)
        with pytest.raises(ReportError, match=re.escape(message)):
            parse_report(json.dumps(doc))

    def test_not_json(self):
        """Garbage is refused as not JSON."""
        with pytest.raises(ReportError, match="not JSON"):
            parse_report(b"\xff{")


class HtmlTests:
    """The HTML page is self-contained and shows every host."""

    def test_page(self):
        """Inline SVG with the CDF steps and one red cross per failure; hosts escaped."""
        page = render_html(parse_report(json.dumps(DOC)))
        assert "<script" not in page and "src=" not in page and "href=" not in page
        svg = re.search(r"<svg.*?</svg>", page, re.S).group(0)
        root = ET.fromstring(svg)  # well-formed XML
        ns = "{http://www.w3.org/2000/svg}"
        assert len([p for p in root.iter(f"{ns}path") if p.get("class") == "failure"]) == 2
        assert "&lt;b&gt;web3&lt;/b&gt;" in page and "<b>web3" not in page
        assert "ssh: &lt;refused&gt;" in page
        assert page.index("web4") < page.index("web2")  # failures first


class CliTests:
    """`murder report FILE --html OUT` from the command line."""

    def test_html(self, tmp_path, capsys):
        """Writes the page (options after the file work) and says where."""
        out = tmp_path / "r.html"
        assert cli.main(["report", write(tmp_path, DOC), "--html", str(out)]) == 0
        assert out.read_text().startswith("<!DOCTYPE html>")
        assert f"wrote {out}" in capsys.readouterr().out

    def test_png(self, tmp_path):
        """--png writes a PNG when matplotlib is there."""
        pytest.importorskip("matplotlib", reason="matplotlib (bench extra) not installed")
        out = tmp_path / "r.png"
        assert cli.main(["report", write(tmp_path, DOC), "--png", str(out)]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_errors(self, tmp_path, capsys):
        """No output option: usage error 2; a bad file: one line, exit 1, nothing written."""
        assert cli.main(["report", write(tmp_path, DOC)]) == 2
        assert "give --html OUT and/or --png OUT" in capsys.readouterr().err
        out = tmp_path / "r.html"
        assert cli.main(["report", write(tmp_path, "{}"), "--html", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and 'no "hosts" list' in err
        assert not out.exists()

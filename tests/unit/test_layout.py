"""The structure rules of docs/architecture.md, checked on the source tree.

Each room stays small enough to read in one sitting: no class in murder/ over
300 lines, every tap (Options + makeService) under 200, and the swarm core
never imports the protocol it is driven by (dialing is injected).
"""

from __future__ import annotations

import ast
import pathlib

import murder

ROOT = pathlib.Path(murder.__file__).parent


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


class LayoutTests:
    """Sizes and imports that the architecture promises."""

    def test_no_class_over_300_lines(self):
        """Every class in murder/ is at most 300 lines, docstrings included."""
        big = [f"{path.relative_to(ROOT)}:{node.name} {node.end_lineno - node.lineno + 1}"
               for path, tree in _modules() for node in ast.walk(tree)
               if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 300]
        assert big == []

    def test_taps_under_200_lines(self):
        """Every tap module holds Options + makeService only: under 200 lines."""
        taps = list(ROOT.rglob("tap.py"))
        assert len(taps) >= 3  # peer, tracker, deploy
        big = [f"{p.relative_to(ROOT)} {n}" for p in taps
               if (n := len(p.read_text().splitlines())) >= 200]
        assert big == []

    def test_swarm_core_does_not_import_the_protocol(self):
        """session.py and the modules it is split into import no protocol, reactor or socket."""
        core = ["session", "admission", "requests", "uploads", "ratelimit", "blame",
                "completion", "nearness", "chain", "picker", "interfaces", "config"]
        forbidden = {"murder.peer.protocol", "twisted.internet.reactor", "socket"}
        found = []
        for name in core:
            tree = ast.parse((ROOT / "peer" / f"{name}.py").read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                found += [f"{name}: {n}" for n in names if n in forbidden]
        assert found == []

"""Packaging: twistd finds our plugins after a regular and an editable install.

With today's setuptools the default editable install hides ``twisted/plugins``
from twistd (ARCHITECTURE.md); the Makefile uses ``editable_mode=compat``.
These tests install the project both ways into throwaway virtualenvs and ask
the real ``twistd --help`` of each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ("murder-tracker", "murder-seeder", "murder-peer")

pytestmark = pytest.mark.integration


def _venv_with(tmp_path: Path, *install: str) -> Path:
    """A fresh venv that shares this one's packages, with the project installed."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # Reuse the dependencies already installed here (no download), via a .pth
    # file pointing at this interpreter's site-packages; only murder is new.
    site = subprocess.run([py, "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")][0]
    Path(site, "zz_shared_deps.pth").write_text(ours + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", *install],
                   check=True, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    return env_dir


def _twistd_help(env_dir: Path, tmp_path: Path) -> str:
    run = subprocess.run([env_dir / "bin" / "python", "-m", "twisted", "--help"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    return run.stdout + run.stderr


class PluginDiscoveryTests:
    """Each install mode exposes all three twistd plugins."""

    def test_regular_install(self, tmp_path):
        """`pip install .` (a copy in site-packages): twistd lists every murder plugin."""
        env_dir = _venv_with(tmp_path, str(ROOT))
        text = _twistd_help(env_dir, tmp_path)
        for name in PLUGINS:
            assert name in text, text
        listing = subprocess.run([env_dir / "bin" / "python", "-c",
                                  "import murder, twisted.plugins.murder_plugins as p; "
                                  "print(murder.__file__); print(p.__file__)"],
                                 capture_output=True, text=True, cwd=tmp_path, check=True).stdout
        assert str(ROOT) not in listing, "the regular install must not point at the checkout"

    def test_editable_compat_install(self, tmp_path):
        """`pip install -e . --config-settings editable_mode=compat` (the Makefile's): listed too."""
        env_dir = _venv_with(tmp_path, "-e", str(ROOT), "--config-settings",
                             "editable_mode=compat")
        text = _twistd_help(env_dir, tmp_path)
        for name in PLUGINS:
            assert name in text, text

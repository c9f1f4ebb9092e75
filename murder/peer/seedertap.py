"""twistd plugin module for ``murder-seeder`` (and ``murder seed``)."""

from murder.peer.tap import SeederOptions as Options
from murder.peer.tap import make_service as makeService
from murder.peer.tap import run_foreground as runForeground

__all__ = ["Options", "makeService", "runForeground"]

"""twistd plugin module for ``murder-peer`` (and ``murder peer``)."""

from murder.peer.tap import PeerOptions as Options
from murder.peer.tap import make_service as makeService
from murder.peer.tap import run_foreground as runForeground

__all__ = ["Options", "makeService", "runForeground"]

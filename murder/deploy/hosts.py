"""Host lists: ``[user@]host[:port]`` specs, one a line, ``#`` comments.

Pure parsing, no I/O: the command reads the file (or stdin for ``-``) and
hands the text here.  A malformed line fails the whole list with its line
number, before any host is contacted: a typo must not silently shrink a fleet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from murder.errors import ConfigError

# user: what OpenSSH accepts in practice; host: a name, IPv4, or [IPv6].
_SPEC = re.compile(r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
                   r"(?:\[(?P<v6>[0-9A-Fa-f:.%a-zA-Z0-9]+)\]|(?P<host>[A-Za-z0-9_][A-Za-z0-9._-]*))"
                   r"(?::(?P<port>[0-9]{1,5}))?$")


@dataclass(frozen=True, order=True)
class Target:
    """One host to deploy to, as the user wrote it (the name SSH resolves)."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def name(self) -> str:
        """The canonical spec, used as the host's label in output and reports."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{host}{port}"

    def __str__(self) -> str:
        return self.name


def parse_target(spec: str) -> Target:
    """``[user@]host[:port]`` (IPv6 as ``[addr]``) → :class:`Target`."""
    text = spec.strip()
    m = _SPEC.match(text)
    if not m or text.startswith("-"):
        raise ConfigError(f"not a host ([user@]host[:port]): {spec!r}")
    port = None
    if m.group("port") is not None:
        port = int(m.group("port"))
        if not 0 < port < 65536:
            raise ConfigError(f"port out of range in {spec!r}")
    return Target(host=m.group("v6") or m.group("host"), user=m.group("user"), port=port)


def parse_host_lines(text: str, source: str = "hosts") -> list[Target]:
    """Targets of a host list: one a line; ``#`` starts a comment; blanks ignored."""
    targets = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            targets.append(parse_target(line))
        except ConfigError as e:
            raise ConfigError(f"{source} line {number}: {e}") from None
    return targets


def unique(targets: Iterable[Target]) -> list[Target]:
    """Targets in first-seen order, duplicates dropped."""
    seen: set[Target] = set()
    out = []
    for t in targets:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out

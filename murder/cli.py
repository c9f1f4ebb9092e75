"""The ``murder`` command: the same services as the twistd plugins, in the foreground.

Each subcommand reuses the plugin's ``usage.Options`` so the flags, defaults and
validation are identical under ``murder X`` and ``twistd murder-X``.  Errors
print one line on stderr and give a non-zero exit status.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from typing import Sequence

from murder.startup import defer_imports, imports_done

defer_imports()  # before Twisted: start-up is paid by every host at once

from twisted.python import usage  # noqa: E402

from murder import __version__
from murder.errors import MurderError


class MakeTorrentOptions(usage.Options):
    """``murder make-torrent PATH --announce URL``."""

    synopsis = "murder make-torrent --announce URL [options] PATH"
    optParameters = [
        ["announce", "a", None, "Tracker announce URL (http://host:8998/announce)."],
        ["output", "o", None, "Torrent file to write (default: PATH.torrent)."],
        ["piece-length", "p", None, "Piece length in bytes, a power of two (default: auto).", int],
        ["comment", "c", None, "Free-form comment stored in the torrent."],
        ["sign", None, None, "Ed25519 private key (PEM) to sign the torrent with."],
        ["auth-secret", None, None, "File holding the tracker's shared announce secret."],
    ]
    optFlags = [
        ["private", None, "Set the private flag (no DHT/PEX in standard clients)."],
        ["quiet", "q", "No progress display."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["announce-list"] = []

    def opt_announce_list(self, tier: str) -> None:
        """A tier of backup trackers, comma-separated (repeatable; BEP 12)."""
        self["announce-list"].append([u for u in tier.split(",") if u])

    def parseArgs(self, path: str) -> None:  # type: ignore[override]  # noqa: N802
        self["path"] = path

    def postOptions(self) -> None:  # noqa: N802
        if not self["announce"]:
            raise usage.UsageError("--announce URL is required")


def _progress_printer(stream):
    """Return a progress callback drawing one updating line on a terminal."""
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        stream.write(f"\rhashing {done / 2**20:8.1f} / {total / 2**20:.1f} MiB  {pct:5.1f}%")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


def make_torrent(options: MakeTorrentOptions) -> int:
    from murder import metainfo

    secret = None
    if options["auth-secret"]:
        from murder.auth import load_secret

        secret = load_secret(options["auth-secret"])  # a bad file fails before hashing
    announce_list = options["announce-list"]
    if announce_list:
        announce_list = [[options["announce"]], *announce_list]
    torrent = metainfo.create(
        options["path"], options["announce"], piece_length=options["piece-length"],
        announce_list=announce_list or None, comment=options["comment"],
        private=bool(options["private"]),
        progress=None if options["quiet"] else _progress_printer(sys.stderr),
    )
    if secret is not None:
        from murder import trust

        # Before signing: the signature covers the announce URLs, token included.
        torrent = trust.authorise_announce(torrent, secret)
    if options["sign"]:
        from murder import trust

        torrent = trust.sign_torrent(torrent, trust.load_private_key(options["sign"]))
    output = options["output"] or options["path"].rstrip(os.sep) + ".torrent"
    from murder import bencode

    data = metainfo.parse(bencode.encode(torrent))
    metainfo.write_atomic(output, data.encode())
    print(f"{output}: info hash {data.info_hash.hex()}, {data.num_pieces} pieces "
          f"of {data.piece_length} bytes, {data.total_length} bytes")
    return 0


# Subcommands that run a long-lived service are the twistd plugins' Options,
# imported lazily so ``murder --help`` stays fast.
_SERVICE_COMMANDS = {
    "tracker": ("murder.tracker.tap", "Run the HTTP tracker."),
    "seed": ("murder.peer.seedertap", "Seed a payload until stopped."),
    "peer": ("murder.peer.peertap", "Download a payload, seed a while, exit."),
}
_LOCAL_COMMANDS = {
    "make-torrent": (MakeTorrentOptions, make_torrent, "Create a torrent for a file or directory."),
}
_EXTRA_COMMANDS = {
    "keygen": ("murder.trust", "Create an Ed25519 key pair for signing torrents."),
    "verify": ("murder.trust", "Check a torrent's signature against trusted keys."),
    "deploy": ("murder.deploy.cli", "Deploy a payload to a fleet over SSH."),
    "report": ("murder.report", "Draw a deploy --report JSON: completion-time CDF (HTML/PNG)."),
    "simulate": ("murder.sim.cli", "Simulate a fleet deploy with the real swarm code."),
}


def _usage() -> str:
    lines = [f"Usage: murder COMMAND [options]   (version {__version__})", "", "Commands:"]
    for name, (_, _, text) in _LOCAL_COMMANDS.items():
        lines.append(f"  {name:14} {text}")
    for name, (_, text) in {**_SERVICE_COMMANDS, **_EXTRA_COMMANDS}.items():
        lines.append(f"  {name:14} {text}")
    lines.append("")
    lines.append("Run `murder COMMAND --help` for a command's options.")
    return "\n".join(lines)


def _report_status_fd(args: list[str], line: str) -> None:
    """A peer asked for ``--status-fd N`` hears about option errors there too."""
    for i, arg in enumerate(args):
        value = None
        if arg == "--status-fd" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--status-fd="):
            value = arg.split("=", 1)[1]
        if value is not None and value.isdigit():
            try:
                os.write(int(value), (line + "\n").encode())
                os.close(int(value))
            except OSError:
                pass
            return


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status.

    The cyclic GC is off while the command's modules load: every host of a
    deploy pays this start-up at once, and the thousands of objects imports
    create live as long as the process (~5% of a peer's start-up CPU).
    """
    gc.disable()
    try:
        return _main(argv)
    finally:
        if not gc.isenabled():
            gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(__version__)
        return 0
    command, rest = args[0], args[1:]
    try:
        if command in _LOCAL_COMMANDS:
            options_class, run, _ = _LOCAL_COMMANDS[command]
            imports_done()
            options = options_class()
            options.parseOptions(rest)
            return run(options)
        if command in _SERVICE_COMMANDS:
            module = importlib.import_module(_SERVICE_COMMANDS[command][0])
            imports_done()
            options = module.Options()
            options.parseOptions(rest)
            return module.runForeground(options)
        if command in _EXTRA_COMMANDS:
            module = importlib.import_module(_EXTRA_COMMANDS[command][0])
            imports_done()
            return module.main(command, rest)
    except usage.UsageError as e:
        _report_status_fd(rest, f"failed {e}")
        print(f"murder {command}: {e}", file=sys.stderr)
        print(f"Run `murder {command} --help` for usage.", file=sys.stderr)
        return 2
    except MurderError as e:
        print(f"murder {command}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"murder {command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help inside usage.Options
        return e.code if isinstance(e.code, int) else 0
    print(f"murder: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2

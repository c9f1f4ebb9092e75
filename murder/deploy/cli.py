"""``murder deploy`` as a :mod:`murder.cli` extra command (imported only when used)."""

from __future__ import annotations


def main(command: str, argv: list[str]) -> int:
    """Parse ``argv`` (UsageError/MurderError are reported by murder.cli) and run."""
    from murder.deploy.tap import DeployOptions, run_foreground

    options = DeployOptions()
    options.parseOptions(argv)
    return run_foreground(options)

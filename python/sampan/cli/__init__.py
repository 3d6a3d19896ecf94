"""The `sampan` command."""

from __future__ import annotations

import click

from sampan import __version__
from sampan.cli.runtime_cmd import runtime


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="sampan")
def main() -> None:
    """Sampan: a small, fast container engine with Docker's interfaces."""


main.add_command(runtime)

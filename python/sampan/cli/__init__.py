"""The `sampan` command."""

from __future__ import annotations

import click

from sampan import __version__
from sampan.cli.runtime_cmd import runtime


class _LazyGroup(click.Group):
    """Loads the daemon-facing commands (and their HTTP client) only when one is used, so
    `sampan runtime …` starts as fast as the runtime itself allows."""

    _loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from sampan.cli.containers_cmd import COMMANDS as CONTAINER_COMMANDS
        from sampan.cli.images_cmd import COMMANDS as IMAGE_COMMANDS
        from sampan.cli.system_cmd import info_cmd, system_group, version_cmd

        for cmd in IMAGE_COMMANDS:
            self.add_command(cmd)
        for cmd in CONTAINER_COMMANDS:  # after the images: `inspect` serves both
            self.add_command(cmd)
        from sampan.cli.networks_cmd import COMMANDS as NETWORK_COMMANDS

        for cmd in NETWORK_COMMANDS:
            self.add_command(cmd)
        from sampan.cli.lifecycle_cmd import COMMANDS as LIFECYCLE_COMMANDS

        for cmd in LIFECYCLE_COMMANDS:
            self.add_command(cmd)
        from sampan.cli.fs_cmd import COMMANDS as FS_COMMANDS
        from sampan.cli.volumes_cmd import COMMANDS as VOLUME_COMMANDS

        for cmd in FS_COMMANDS + VOLUME_COMMANDS:
            self.add_command(cmd)
        self.add_command(version_cmd)
        self.add_command(info_cmd)
        self.add_command(system_group)

    def get_command(self, ctx: click.Context, name: str):  # type: ignore[override]
        if name != "runtime":
            self._load()
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context):  # type: ignore[override]
        self._load()
        return super().list_commands(ctx)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="sampan")
@click.option("-H", "--host", envvar="SAMPAN_HOST", metavar="URL",
              help="daemon socket to connect to: unix:///path or tcp://host:port "
                   "(env SAMPAN_HOST; default unix:///run/sampan/sampan.sock)")
@click.option("--tls", is_flag=True, help="use TLS (implied by --tlsverify)")
@click.option("--tlsverify", is_flag=True, envvar="SAMPAN_TLS_VERIFY",
              help="use TLS and verify the daemon (env SAMPAN_TLS_VERIFY)")
@click.option("--tlscacert", metavar="FILE", help="trust certs signed only by this CA")
@click.option("--tlscert", metavar="FILE", help="TLS certificate file")
@click.option("--tlskey", metavar="FILE", help="TLS key file")
@click.option("--config", "config_dir", metavar="DIR", envvar="SAMPAN_CONFIG",
              help="location of client config files (env SAMPAN_CONFIG; default ~/.sampan)")
@click.option("-D", "--debug", is_flag=True, help="enable debug mode")
@click.option("-l", "--log-level", type=click.Choice(["debug", "info", "warn", "error",
                                                      "fatal"]), default="info", hidden=True)
@click.pass_context
def main(ctx: click.Context, host: str | None, tls: bool, tlsverify: bool,
         tlscacert: str | None, tlscert: str | None, tlskey: str | None,
         config_dir: str | None, debug: bool, log_level: str) -> None:
    """Sampan: a small, fast container engine with Docker's interfaces."""
    if config_dir:
        import os

        os.environ["SAMPAN_CONFIG"] = config_dir
    if ctx.invoked_subcommand == "runtime":
        return  # the runtime verbs keep their own state
    from sampan.cli.system_cmd import CliState

    ctx.obj = CliState(host=host, tls=tls, tlsverify=tlsverify, tlscacert=tlscacert,
                       tlscert=tlscert, tlskey=tlskey, config_dir=config_dir, debug=debug)


main.add_command(runtime)

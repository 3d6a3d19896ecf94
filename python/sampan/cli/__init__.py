"""The `sampan` command."""

from __future__ import annotations

import click

from sampan import __version__

# Command modules, most used first. A command is looked up module by module and only the
# modules up to the one that has it are imported, so `sampan ps` or `sampan run` pay for the
# container commands alone (start-up is most of a CLI call's time). A name found in an earlier
# module wins: the container `inspect` also serves images.
_MODULES = ("containers_cmd", "images_cmd", "lifecycle_cmd", "networks_cmd", "fs_cmd",
            "volumes_cmd", "system_cmd")


class _LazyGroup(click.Group):
    """Loads command modules (and the HTTP client) only when one of their commands is used;
    `sampan runtime …` loads none of them."""

    _next = 0

    def _load_next(self) -> bool:
        if self._next >= len(_MODULES):
            return False
        import importlib

        mod = importlib.import_module(f"sampan.cli.{_MODULES[self._next]}")
        self._next += 1
        for cmd in mod.COMMANDS:
            if cmd.name not in self.commands:
                self.add_command(cmd)
        return True

    def get_command(self, ctx: click.Context, name: str):  # type: ignore[override]
        if name == "runtime" and name not in self.commands:
            from sampan.cli.runtime_cmd import runtime

            self.add_command(runtime)
        while name not in self.commands and self._load_next():
            pass
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context):  # type: ignore[override]
        while self._load_next():
            pass
        self.get_command(ctx, "runtime")
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


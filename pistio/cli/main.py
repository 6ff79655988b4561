"""The ``pistio`` command: istioctl's and kubectl's verbs for the mesh."""

from __future__ import annotations

import importlib
import sys

import click

from pistio import __version__

# Subcommand name → "module:attribute". Loaded on first use, so a long-running process (a
# sidecar's `pistio proxy`, the discovery) imports only its own command's modules: the proxy
# agent does not carry pydantic, the config model or the node runtime in memory.
COMMANDS = {
    "validate": "pistio.cli.validate_cmd:validate",
    "analyze": "pistio.cli.analyze_cmd:analyze",
    "discovery": "pistio.cli.discovery_cmd:discovery",
    "proxy-status": "pistio.cli.proxy_status_cmd:proxy_status",
    "proxy-config": "pistio.cli.proxy_config_cmd:proxy_config",
    "proxy": "pistio.cli.proxy_cmd:proxy",
    # The local mesh runtime: kubectl's verbs against the node (docs/runtime.md).
    "up": "pistio.cli.up_cmd:up",
    "apply": "pistio.cli.apply_cmd:apply",
    "delete": "pistio.cli.apply_cmd:delete",
    "get": "pistio.cli.get_cmd:get",
    "exec": "pistio.cli.exec_cmd:exec_",
    "logs": "pistio.cli.exec_cmd:logs",
    "down": "pistio.cli.up_cmd:down",
    # Observability: the Kiali-like service graph and proxy list (docs/observability.md).
    "dashboard": "pistio.cli.dashboard_cmd:dashboard",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pistio")
def cli() -> None:
    """pistio: a service mesh in Python that speaks Istio's APIs."""


def main() -> None:
    """Entry point: any failure ends in one clear line, never a traceback."""
    try:
        cli.main(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # last resort: report, do not dump a stack
        click.echo(f"Error: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(70)

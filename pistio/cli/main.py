"""The ``pistio`` command: istioctl's and kubectl's verbs for the mesh."""

from __future__ import annotations

import sys

import click

from pistio import __version__
from pistio.cli.analyze_cmd import analyze
from pistio.cli.apply_cmd import apply, delete
from pistio.cli.discovery_cmd import discovery
from pistio.cli.exec_cmd import exec_, logs
from pistio.cli.get_cmd import get
from pistio.cli.proxy_cmd import proxy
from pistio.cli.proxy_config_cmd import proxy_config
from pistio.cli.proxy_status_cmd import proxy_status
from pistio.cli.up_cmd import down, up
from pistio.cli.validate_cmd import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pistio")
def cli() -> None:
    """pistio: a service mesh in Python that speaks Istio's APIs."""


cli.add_command(validate)
cli.add_command(analyze)
cli.add_command(discovery)
cli.add_command(proxy_status)
cli.add_command(proxy_config)
cli.add_command(proxy)
# The local mesh runtime: kubectl's verbs against the node (docs/runtime.md).
for command in (up, apply, delete, get, exec_, logs, down):
    cli.add_command(command)


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

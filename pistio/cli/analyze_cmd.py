"""``pistio analyze``: istioctl analyze (``--use-kube=false``) over files and directories."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import yaml

from pistio.config.analysis.analyzers import all_analyzers
from pistio.config.analysis.messages import LEVELS
from pistio.config.analysis.runner import (
    InputError,
    Options,
    Suppression,
    UsageError,
    analyze_paths,
    at_or_above,
    filter_messages,
)

EXIT_ISSUES = 79  # messages at or above the failure threshold
EXIT_BAD_INPUT = 65  # input that cannot be read or parsed
EXIT_USAGE = 64  # bad flags or arguments
DOCS = "https://istio.io/latest/docs/reference/config/analysis"


class _Command(click.Command):
    """Usage errors exit 64, as istioctl's do."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.exit_code = EXIT_USAGE
            raise


def _level(value: str) -> str:
    for name in LEVELS:
        if name.lower() == value.lower():
            return name
    raise click.BadParameter(f"{value!r} is not one of {', '.join(LEVELS)}")


def _list_analyzers() -> None:
    click.echo("Available analyzers:")
    for a in all_analyzers():
        note = "" if a.default else " (runs only when named)"
        click.echo(f"* {a.name}:{note}\n    {a.description}")


def _fail(code: int, message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.command(cls=_Command)
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Choice(["log", "json", "yaml"]),
    default="log",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--failure-threshold",
    default="Error",
    show_default=True,
    help="The severity level (Info, Warning, Error) at which analysis exits non-zero.",
)
@click.option(
    "--output-threshold",
    default="Info",
    show_default=True,
    help="The lowest severity level (Info, Warning, Error) of messages printed.",
)
@click.option("-n", "--namespace", default=None, help="Report only on resources of this namespace.")
@click.option("-A", "--all-namespaces", is_flag=True, help="Report on resources of all namespaces.")
@click.option(
    "-i",
    "--istioNamespace",
    "istio_namespace",
    default="istio-system",
    show_default=True,
    help="Istio system namespace.",
)
@click.option("--meshConfigFile", "mesh_config_file", default=None, help="MeshConfig YAML to use.")
@click.option(
    "--meshNetworksFile",
    "mesh_networks_file",
    default=None,
    help="MeshNetworks YAML to use (pistio extension).",
)
@click.option("-L", "--list-analyzers", is_flag=True, help="List the analyzers and exit.")
@click.option(
    "-S",
    "--suppress",
    multiple=True,
    help='Suppress messages: "<code>=<resource>", e.g. "IST0102=Namespace frod" (globs allowed).',
)
@click.option("-R", "--recursive", is_flag=True, help="Process directories recursively.")
@click.option(
    "--analyzer",
    "analyzers",
    multiple=True,
    help="Run only this analyzer (name as --list-analyzers prints it); repeatable.",
)
@click.option(
    "--use-kube",
    type=click.BOOL,
    default=False,
    show_default=True,
    help="Accepted for istioctl compatibility; only false (files) is supported.",
)
@click.option("-v", "--verbose", is_flag=True, help="Print which analyzers ran.")
def analyze(
    inputs: tuple[str, ...],
    output: str,
    failure_threshold: str,
    output_threshold: str,
    namespace: str | None,
    all_namespaces: bool,
    istio_namespace: str,
    mesh_config_file: str | None,
    mesh_networks_file: str | None,
    list_analyzers: bool,
    suppress: tuple[str, ...],
    recursive: bool,
    analyzers: tuple[str, ...],
    use_kube: bool,
    verbose: bool,
) -> None:
    """Analyze Istio configuration in FILES and DIRECTORIES, as istioctl analyze does.

    Exit codes: 0 no issue at or above the failure threshold, 79 issues found,
    65 input that cannot be parsed, 64 bad usage.
    """
    if list_analyzers:
        _list_analyzers()
        return
    try:
        fail_level = _level(failure_threshold)
        out_level = _level(output_threshold)
    except click.BadParameter as exc:
        _fail(EXIT_USAGE, str(exc))
    if use_kube:
        _fail(EXIT_USAGE, "pistio analyze reads files only; use --use-kube=false")
    if not inputs:
        _fail(EXIT_USAGE, "no input files or directories given")
    if namespace and all_namespaces:
        _fail(EXIT_USAGE, "--namespace and --all-namespaces are mutually exclusive")
    options = Options(
        analyzers=analyzers,
        mesh_config_file=mesh_config_file,
        mesh_networks_file=mesh_networks_file,
        istio_namespace=istio_namespace,
        recursive=recursive,
    )
    try:
        suppressions = [Suppression.parse(s) for s in suppress]
        messages = analyze_paths(inputs, options)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    except InputError as exc:
        for issue in exc.issues:
            click.echo(f"Error: {issue}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if verbose:
        names = ", ".join(analyzers) if analyzers else "the default set"
        click.echo(f"Analyzers run: {names}", err=True)
    messages = filter_messages(messages, None if all_namespaces else namespace, suppressions)
    shown = at_or_above(messages, out_level)
    scope = f"namespace: {namespace}" if namespace and not all_namespaces else "all namespaces"
    _print(shown, output, scope)
    if at_or_above(messages, fail_level):
        if output == "log":
            click.echo(
                f"Error: Analyzers found issues when analyzing {scope}.\n"
                f"See {DOCS} for more information about causes and resolutions.",
                err=True,
            )
        sys.exit(EXIT_ISSUES)


def _print(messages: list[Any], output: str, scope: str) -> None:
    if output == "json":
        click.echo(json.dumps([m.to_dict() for m in messages], indent=2, ensure_ascii=False))
    elif output == "yaml":
        click.echo(yaml.safe_dump([m.to_dict() for m in messages], sort_keys=False), nl=False)
    elif messages:
        for m in messages:
            click.echo(str(m))
    else:
        click.echo(f"\u2714 No validation issues found when analyzing {scope}.", err=True)

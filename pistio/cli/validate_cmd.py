"""``pistio validate``: istioctl validate for files, directories and stdin."""

from __future__ import annotations

import sys

import click

from pistio.config.loader import read_paths
from pistio.config.validation import check_documents


@click.command()
@click.option(
    "-f",
    "--filename",
    "filenames",
    multiple=True,
    required=True,
    help="File, directory or - (stdin) to validate; repeatable.",
)
@click.option("-R", "--recursive", is_flag=True, help="Process directories recursively.")
@click.option("-q", "--quiet", is_flag=True, help="Print only problems.")
def validate(filenames: tuple[str, ...], recursive: bool, quiet: bool) -> None:
    """Validate Istio and Kubernetes resources as Istio's webhook would.

    Prints one line per valid resource and exits 0; otherwise lists every error and exits 1.
    """
    docs, load_issues = read_paths(filenames, recursive=recursive)
    checked = check_documents(docs)
    errors = list(load_issues)
    for c in checked:
        for w in c.warnings:
            click.echo(f"Warning: {w}", err=True)
        errors += c.errors
        if c.valid and not quiet:
            click.echo(f'validated {c.resource.ref} ({c.doc.source})')  # type: ignore[union-attr]
    for e in errors:
        click.echo(f"Error: {e}", err=True)
    if errors:
        invalid = sum(1 for c in checked if not c.valid)
        click.echo(
            f"Error: {len(errors)} error(s) found"
            + (f" in {invalid} resource(s)" if invalid else ""),
            err=True,
        )
        sys.exit(1)
    if not checked:
        click.echo("Error: no resources found in the input", err=True)
        sys.exit(1)

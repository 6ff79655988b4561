"""``pistio apply -f`` and ``pistio delete``: kubectl's verbs against the local node.

Both are all-or-nothing per call: if any object in the files is invalid, nothing from the
call is applied (or deleted) and every error is printed.
"""

from __future__ import annotations

import click

from pistio.cli.node_client import (
    call,
    fail,
    group_of,
    kind_info,
    namespace_option,
    read_manifests,
    resource_name,
)

filename_option = click.option("-f", "--filename", "filenames", multiple=True,
                               help="File, directory (its .yaml/.yml/.json files) or -; "
                                    "repeatable.")
recursive_option = click.option("-R", "--recursive", is_flag=True,
                                help="Process directories recursively.")


def report(results: list[list[str]]) -> None:
    for kind, _ns, name, what in results:
        click.echo(f"{resource_name(kind, group_of(kind))}/{name} {what}")


def apply_files(filenames: tuple[str, ...], recursive: bool, namespace: str | None) -> None:
    items = read_manifests(filenames, recursive)
    answer = call("apply", items=items, namespace=namespace)
    report(answer["results"])


@click.command()
@filename_option
@recursive_option
@namespace_option
def apply(filenames: tuple[str, ...], recursive: bool, namespace: str | None) -> None:
    """Create or update the objects in the files on the running node (kubectl apply)."""
    if not filenames:
        fail("must specify one of -f and -k")
    apply_files(filenames, recursive, namespace)


@click.command()
@click.argument("target", nargs=-1)
@filename_option
@recursive_option
@namespace_option
@click.option("--ignore-not-found", is_flag=True, help="Treat absent objects as deleted.")
def delete(target: tuple[str, ...], filenames: tuple[str, ...], recursive: bool,
           namespace: str | None, ignore_not_found: bool) -> None:
    """Delete the objects in the files, or KIND NAME... (kubectl delete).

    Deleting a pod that a Deployment owns gets it replaced by a new one, with a new name and
    usually a new IP, as on Kubernetes.
    """
    if filenames and target:
        fail("there is no need to specify a resource type as a separate argument when "
             "passing arguments in resource/name form")
    if filenames:
        items = read_manifests(filenames, recursive)
    else:
        if len(target) < 2:
            fail("resource(s) were provided, but no name was specified" if target
                 else "must provide one or more resources by argument or filename")
        info = kind_info(target[0])
        if info.kind == "Pod":
            for name in target[1:]:
                answer = call("delete_pod", namespace=namespace or "default", name=name)
                report(answer["results"])
            return
        items = [{"data": {"apiVersion": info.preferred_api_version, "kind": info.kind,
                           "metadata": {"name": name,
                                        **({"namespace": namespace} if namespace else {})}},
                  "file": "<command line>", "line": 1, "source_dir": "."}
                 for name in target[1:]]
    answer = call("delete", items=items, namespace=namespace,
                  ignore_not_found=ignore_not_found)
    report(answer["results"])

"""Validation as Istio's validating webhook (and the Kubernetes API server) apply it.

:func:`check_document` types a document and runs its kind's rules; the result carries the
typed resource when the document is valid (warnings allowed) and every issue found.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pistio.config.issues import ConfigIssue, FieldErrors
from pistio.config.resource import Document, Resource
from pistio.config.schema import kind_of, type_document
from pistio.config.validation.common import (
    K8S_LABEL_MESSAGE,
    K8S_SUBDOMAIN_MESSAGE,
    is_k8s_label_name,
    is_k8s_subdomain,
)
from pistio.config.validation.registry import validator_for


@dataclass
class Checked:
    """One document after checking.

    ``typed`` is set whenever the document fits its kind's schema; ``resource`` only when it
    also passed every rule. Istio's analyzers see typed resources even when the webhook
    would reject them (the schema analyzer reports those), so analysis reads ``typed``.
    """

    doc: Document
    resource: Resource | None
    issues: list[ConfigIssue] = field(default_factory=list)
    typed: Resource | None = None

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def warnings(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.level == "warning"]

    @property
    def valid(self) -> bool:
        return self.resource is not None


def _check_metadata(res: Resource, errs: FieldErrors) -> None:
    meta = res.metadata
    if not meta.name and not meta.generate_name:
        errs.error("metadata.name", "name or generateName is required")
    elif meta.name and not is_k8s_subdomain(meta.name):
        errs.error("metadata.name", f'invalid name "{meta.name}": {K8S_SUBDOMAIN_MESSAGE}')
    if meta.namespace is not None and meta.namespace and not is_k8s_label_name(meta.namespace):
        errs.error(
            "metadata.namespace", f'invalid namespace "{meta.namespace}": {K8S_LABEL_MESSAGE}'
        )


def _issues(doc: Document, ref: str, errs: FieldErrors) -> list[ConfigIssue]:
    file = doc.source.file
    out = [
        ConfigIssue(msg, ref=ref, path=path, file=file, line=doc.line_of(path))
        for path, msg in errs.errors
    ]
    out += [
        ConfigIssue(msg, ref=ref, path=path, file=file, line=doc.line_of(path), level="warning")
        for path, msg in errs.warnings
    ]
    out.sort(key=lambda i: i.line or 0)
    return out


def check_document(doc: Document) -> Checked:
    errs = FieldErrors()
    try:
        info = kind_of(doc)
    except ValueError as exc:
        errs.error("", str(exc))
        return Checked(doc, None, _issues(doc, doc.ref, errs))
    res = type_document(doc, info, errs)
    if res is None:
        return Checked(doc, None, _issues(doc, doc.ref, errs))
    _check_metadata(res, errs)
    validator = validator_for(info.group, info.kind)
    if validator is not None:
        try:
            validator(res, errs)
        except Exception as exc:  # a bug in a validator must not hide the rest of the input
            errs.error("", f"internal error while validating: {type(exc).__name__}: {exc}")
    issues = _issues(doc, res.ref, errs)
    return Checked(doc, None if errs.errors else res, issues, typed=res)


def check_documents(docs: Iterable[Document]) -> list[Checked]:
    return [check_document(d) for d in docs]

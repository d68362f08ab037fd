"""Tenants: who a job is charged to (a course, a team), named once per job when it is submitted.

Pure, no I/O: what a tenant name may be, where a job's tenant comes from, and the bounded metric label. Every job
has one; a job stored before tenants existed (no ``tenant`` in its message) belongs to ``DEFAULT``. Where a
job's tenant comes from, first that applies:

1. the API key it was submitted with, when that key names a tenant (``HADES_SUBMIT_API_KEYS_FILE``);
2. the ``tenant`` field of a ``POST /jobs`` document;
3. for ``POST /build``, the job metadata key the operator names (``HADES_BUILD_TENANT_METADATA_KEY``);
4. ``DEFAULT``.

A keyed tenant cannot be overridden: a document naming another tenant is a 422 on ``/tenant`` (a student with
one course's key must not charge another course), one naming the same tenant is fine. A ``/build`` metadata value
is only a hint: with a keyed tenant it is ignored, and a value that is not a tenant name is ignored too (the
original's payload never had to follow our pattern), so ``/build`` never fails for it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from runtime.errors import InvalidJob

DEFAULT = "default"
"""The tenant of a job nothing names one for, and of every job stored before tenants existed."""
OTHER_LABEL = "other"
"""The metric label of every tenant the operator did not name (so the label set stays bounded)."""
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
"""Lower-case letters, digits, ``-`` and ``_``, at most 32: one NATS subject token (no ``.``, ``*``, ``>``), a
Prometheus label value and a short word in a table; lower case only, so ``CS101`` and ``cs101`` are not two."""
_NAME = re.compile(NAME_PATTERN)
NAME_RULE = "must be a tenant name: 1 to 32 lower-case letters, digits, '-' or '_', starting with a letter or digit"


def is_name(text: object) -> bool:
    return isinstance(text, str) and _NAME.match(text) is not None and text != OTHER_LABEL


def resolve(
    *,
    keyed: str | None,
    named: str | None,
    metadata: Mapping[str, str] | None = None,
    metadata_key: str = "",
    allowed: Collection[str] = (),
) -> str:
    """The job's tenant (see module doc). ``named``: the document's ``tenant`` field (already schema-checked);
    ``allowed``: when not empty, the only tenants a document may name (``HADES_TENANTS``), else a 422."""
    if keyed is not None:
        if named is not None and named != keyed:
            raise InvalidJob(
                [{"path": "/tenant", "message": f"must be {keyed!r} (the tenant of this API key) or left out"}]
            )
        return keyed
    if named is not None:
        if not is_name(named):
            raise InvalidJob([{"path": "/tenant", "message": f"must not be {OTHER_LABEL!r} (reserved)"}])
        if allowed and named not in allowed and named != DEFAULT:
            message = f"is not one of this server's tenants: {_listed(allowed)}"
            raise InvalidJob([{"path": "/tenant", "message": message}])
        return named
    if metadata_key and metadata:
        hinted = metadata.get(metadata_key)
        if is_name(hinted) and (not allowed or hinted in allowed):
            return str(hinted)
    return DEFAULT


def label(tenant: str, named: Collection[str]) -> str:
    """The metric label of ``tenant``: itself when the operator named it (or ``DEFAULT``), else ``OTHER_LABEL``."""
    return tenant if tenant == DEFAULT or tenant in named else OTHER_LABEL


def _listed(names: Collection[str]) -> str:
    shown = sorted(names)[:20]
    return ", ".join(shown) + (", …" if len(names) > len(shown) else "")

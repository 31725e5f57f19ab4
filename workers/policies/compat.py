"""Reading a stored policy forward-compatibly: what one guardstream version wrote, another can read.

``policy set`` validates strictly (``extra="forbid"``: a typo is an error the operator sees at once), but a
stream worker reading Redis during a rolling upgrade may meet a policy written by a newer version of the
same major release, with fields it does not know. Those fields are dropped with a note (``ignored``) and
the rest must still validate; anything else that fails — corrupt JSON, a value out of range — is a
``PolicyInvalid`` with a one-line reason, for the store to report and work around.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.policy import TenantPolicy
from workers.errors import PolicyInvalid

MAX_FIELD_DROPS = 64
"""More unknown fields than this is not a newer version's policy; it is something else."""


@dataclass(frozen=True)
class StoredPolicy:
    """A policy read from the store and the unknown fields dropped to read it (dotted paths)."""

    policy: TenantPolicy
    ignored: tuple[str, ...] = ()


def read_policy(tenant_id: str, raw: str | bytes) -> StoredPolicy:
    """Validate a stored policy document, ignoring fields this version does not know."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise PolicyInvalid(f"stored policy for tenant {tenant_id!r} is not JSON: {str(exc)[:200]}") from None
    ignored: list[str] = []
    for _ in range(2):  # a second pass only if dropping fields revealed nothing but more unknown fields
        try:
            policy = TenantPolicy.model_validate(data)
        except ValidationError as exc:
            extra = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
            if not extra or len(extra) != exc.error_count() or len(ignored) + len(extra) > MAX_FIELD_DROPS:
                reason = f"stored policy for tenant {tenant_id!r} is invalid: {_first(exc)}"
                raise PolicyInvalid(reason) from None
            for loc in extra:
                _drop(data, loc)
                ignored.append(".".join(str(p) for p in loc))
            continue
        if policy.tenant_id != tenant_id:
            raise PolicyInvalid(f"stored policy under tenant {tenant_id!r} names tenant {policy.tenant_id!r}")
        return StoredPolicy(policy, tuple(ignored))
    raise PolicyInvalid(f"stored policy for tenant {tenant_id!r} keeps failing validation")


def _drop(data: Any, loc: tuple[int | str, ...]) -> None:
    for part in loc[:-1]:
        data = data[part]
    del data[loc[-1]]


def _first(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<policy>"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {first['msg']}{more}".replace("\n", " ")

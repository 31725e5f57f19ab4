"""Policies from JSON files, so a backfill or ``moderate`` can run without any service.

The one reader of policy files: ``read_policy_file`` for the JSON, ``policies_in`` for what it holds — one
``TenantPolicy`` object, a list of them, or ``{"policies": [...]}``. ``FilePolicyStore`` is picklable, so
backfill hands the store itself to its Ray workers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.policy import TenantPolicy
from workers.errors import InputError
from workers.policies.base import PolicyLookup


def read_policy_file(path: Path) -> Any:
    """The file's JSON value; an unreadable or invalid file is an ``InputError`` naming it."""
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"policy file {path}: {exc}") from exc


def policies_in(data: Any, path: Path) -> list[TenantPolicy]:
    """The policies a policy file's JSON holds (one object, a list, or ``{"policies": [...]}``)."""
    items = data.get("policies", data) if isinstance(data, dict) else data
    if not isinstance(items, list):
        items = [items]
    try:
        return [TenantPolicy.model_validate(item) for item in items]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<policy>"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise InputError(f"policy file {path}: {where}: {first['msg']}{more}") from None


class FilePolicyStore:
    """Policies by tenant, as read from files; implements ``PolicyStore``."""

    def __init__(self, policies: dict[str, TenantPolicy]) -> None:
        self._policies = dict(policies)

    @classmethod
    def from_file(cls, path: Path) -> FilePolicyStore:
        return cls.from_files([path])

    @classmethod
    def from_files(cls, paths: Sequence[Path]) -> FilePolicyStore:
        """All policies of ``paths``; a tenant named in more than one file is an error, not a silent pick."""
        policies: dict[str, TenantPolicy] = {}
        for path in paths:
            for policy in policies_in(read_policy_file(path), path):
                if policy.tenant_id in policies:
                    raise InputError(
                        f"tenant {policy.tenant_id!r} has a policy in more than one --policy file"
                    )
                policies[policy.tenant_id] = policy
        return cls(policies)

    def lookup(self, tenant_id: str) -> PolicyLookup | None:
        policy = self._policies.get(tenant_id)
        return PolicyLookup(policy=policy) if policy is not None else None

    def tenants(self) -> list[str]:
        return sorted(self._policies)

    def policies(self) -> list[TenantPolicy]:
        """Every policy, by tenant id."""
        return [self._policies[tenant] for tenant in self.tenants()]

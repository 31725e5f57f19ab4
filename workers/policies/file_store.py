"""Policies from a JSON file, so a backfill can run without any service.

The file holds one ``TenantPolicy`` object, a list of them, or ``{"policies": [...]}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from schemas.policy import TenantPolicy
from workers.errors import InputError
from workers.policies.base import PolicyLookup


class FilePolicyStore:
    def __init__(self, policies: dict[str, TenantPolicy]) -> None:
        self._policies = dict(policies)

    @classmethod
    def from_file(cls, path: Path) -> FilePolicyStore:
        try:
            data = json.loads(Path(path).read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"policy file {path}: {exc}") from exc
        items = data.get("policies", data) if isinstance(data, dict) else data
        if isinstance(items, dict):
            items = [items]
        try:
            policies = [TenantPolicy.model_validate(item) for item in items]
        except ValidationError as exc:
            raise InputError(f"policy file {path}: {exc}") from exc
        return cls({p.tenant_id: p for p in policies})

    def lookup(self, tenant_id: str) -> PolicyLookup | None:
        policy = self._policies.get(tenant_id)
        return PolicyLookup(policy=policy) if policy is not None else None

    def tenants(self) -> list[str]:
        return sorted(self._policies)

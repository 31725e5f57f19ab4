"""The policy-store interface shared by the Redis store (stream) and the file store (backfill)."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict

from schemas.policy import TenantPolicy


class PolicyLookup(BaseModel):
    """A policy and whether it may be out of date (served from cache while the store was unreachable)."""

    model_config = ConfigDict(frozen=True)

    policy: TenantPolicy
    stale: bool = False
    is_default: bool = False


def default_policy(tenant_id: str) -> TenantPolicy:
    """The deployment default: Llama Guard 3's taxonomy, both sides, threshold 0.5, fail-closed."""
    return TenantPolicy(tenant_id=tenant_id)


class PolicyStore(Protocol):
    """Resolves a tenant's policy. ``None`` means the tenant has no policy (callers apply the unknown-tenant
    setting); ``PolicyStoreUnavailable`` means the store is down and nothing is cached."""

    def lookup(self, tenant_id: str) -> PolicyLookup | None: ...

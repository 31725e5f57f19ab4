"""Tenant policies in Redis, with the in-memory cache stream workers read on every event.

Redis layout (everything under the ``guardstream:`` prefix):

- ``guardstream:policy:{tenant}`` — the stored ``TenantPolicy`` as JSON, ``version`` and ``updated_at`` set.
- ``guardstream:policy-version:{tenant}`` — an integer counter, incremented by every ``put``. It outlives
  ``delete`` so a re-created policy never reuses an old version number (caches compare versions).
- ``guardstream:tenants`` — the set of tenants that have a policy.
- channel ``guardstream:policy-changed`` — ``{"tenant_id": ..., "version": ...}`` published in the same
  MULTI as every change (``version`` is null on delete). Workers invalidate their cached entry on it.

Why a cache: a Redis round trip per event would cap the stream at Redis latency, and a Redis outage would
stall moderation. Workers apply changes within ~2 s through two paths: the pub/sub invalidation (normally
milliseconds) and a max age of ``settings.policy_refresh_s`` in case a message is missed (pub/sub is
fire-and-forget). While Redis is unreachable ``lookup`` serves the last known policy with ``stale=True``,
logs one warning per tenant per outage, and retries Redis with jittered exponential backoff; only a tenant
never seen before raises ``PolicyStoreUnavailable``.

A stored policy that does not validate (corrupt JSON, a value this version refuses) must not break the
stream either: ``lookup`` logs ``policy_invalid`` once per stored document and keeps serving the tenant's
last valid policy (``stale=True``); a tenant that never had one raises ``PolicyInvalid`` (its events are
dead-lettered as ``policy_invalid``). Reading ignores fields a newer version added (``policies.compat``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from schemas.policy import TenantPolicy
from workers.clients.security import redis_security_kwargs
from workers.errors import PolicyInvalid, PolicyStoreUnavailable
from workers.logging import get_logger
from workers.policies.base import PolicyLookup
from workers.policies.compat import read_policy
from workers.policies.invalidation import InvalidationListener
from workers.policies.outage import Outage
from workers.settings import Settings

PREFIX = "guardstream"
TENANTS_KEY = f"{PREFIX}:tenants"
CHANNEL = f"{PREFIX}:policy-changed"

log = get_logger(__name__)


def policy_key(tenant_id: str) -> str:
    return f"{PREFIX}:policy:{tenant_id}"


def version_key(tenant_id: str) -> str:
    return f"{PREFIX}:policy-version:{tenant_id}"


@dataclass
class _Entry:
    policy: TenantPolicy | None  # None: Redis said the tenant has no policy
    fetched_at: float
    fresh: bool = True
    invalid: str | None = None  # why the stored document was refused; ``policy`` is then the last valid one


class RedisPolicyStore:
    """Admin operations (``put``/``get``/``list``/``delete``) and the cached worker ``lookup``.

    Thread-safe. The pub/sub listener thread (``policies.invalidation``) starts on the first ``lookup`` so
    admin-only users (the CLI) never start one. Call ``close()`` when done.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = redis.Redis.from_url(
            settings.redis_url,
            **redis_security_kwargs(settings),
            decode_responses=True,
            socket_connect_timeout=settings.redis_timeout_s,
            socket_timeout=settings.redis_timeout_s,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1),
            health_check_interval=30,
        )
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}
        self._generation: dict[str, int] = {}
        self._reported: dict[str, set[str]] = {}
        self._outage = Outage()
        self._listener = InvalidationListener(
            self._client,
            CHANNEL,
            self._outage,
            invalidate=self._invalidate,
            failed=self._failed,
            where=self._where,
        )
        self.reloads = 0
        """Policies fetched from Redis by ``lookup`` (exported as ``guardstream_policy_reloads_total``)."""

    # --- admin ----------------------------------------------------------------------------------------
    def put(self, policy: TenantPolicy) -> TenantPolicy:
        """Validate and store a policy under the next version; workers are notified in the same MULTI."""
        checked = TenantPolicy.model_validate(policy.model_dump())
        tenant = checked.tenant_id
        stored: list[TenantPolicy] = []

        def write(pipe: Any) -> None:
            version = int(pipe.get(version_key(tenant)) or 0) + 1
            doc = checked.model_copy(update={"version": version, "updated_at": datetime.now(UTC)})
            pipe.multi()
            pipe.set(version_key(tenant), version)
            pipe.set(policy_key(tenant), doc.model_dump_json())
            pipe.sadd(TENANTS_KEY, tenant)
            pipe.publish(CHANNEL, json.dumps({"tenant_id": tenant, "version": version}))
            stored[:] = [doc]

        self._admin(lambda: self._client.transaction(write, version_key(tenant)))
        return stored[0]

    def get(self, tenant_id: str) -> TenantPolicy | None:
        """The stored policy, read from Redis (not the cache)."""
        return self._admin(lambda: self._fetch(tenant_id))

    def list(self) -> list[TenantPolicy]:
        """All stored policies that validate, by tenant id; each invalid one is logged and left out."""
        tenants = sorted(self._admin(lambda: self._client.smembers(TENANTS_KEY)))
        policies: list[TenantPolicy] = []
        for tenant in tenants:
            try:
                policy = self.get(tenant)
            except PolicyInvalid as exc:
                log.warning("policy_invalid", tenant_id=tenant, reason=str(exc))
                continue
            if policy is not None:
                policies.append(policy)
        return policies

    def delete(self, tenant_id: str) -> bool:
        """Remove a tenant's policy (its version counter stays); True if one existed."""

        def remove() -> int:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(policy_key(tenant_id))
            pipe.srem(TENANTS_KEY, tenant_id)
            pipe.publish(CHANNEL, json.dumps({"tenant_id": tenant_id, "version": None}))
            return int(pipe.execute()[0])

        return self._admin(remove) > 0

    # --- worker lookup --------------------------------------------------------------------------------
    def lookup(self, tenant_id: str) -> PolicyLookup | None:
        """The tenant's policy from cache, refreshed from Redis when invalidated or older than the max age.

        ``None``: the tenant has no policy. Raises ``PolicyStoreUnavailable`` only if Redis is unreachable
        and nothing is cached for the tenant, ``PolicyInvalid`` only if the stored policy does not validate
        and the tenant never had a valid one.
        """
        self._listener.ensure_started()
        with self._lock:
            entry = self._cache.get(tenant_id)
            generation = self._generation.get(tenant_id, 0)
        age = time.monotonic() - entry.fetched_at if entry else 0.0
        if entry and entry.fresh and age < self._settings.policy_refresh_s and not self._outage.down:
            return self._cached(tenant_id, entry)
        if self._outage.should_try():
            try:
                policy = self._fetch(tenant_id)
            except RedisError as exc:
                self._failed(exc)
            except PolicyInvalid as exc:
                self._outage.recovered()
                return self._cached(tenant_id, self._remember_invalid(tenant_id, entry, str(exc), generation))
            else:
                self._outage.recovered()
                self.reloads += 1
                self._remember(tenant_id, policy, generation)
                return _as_lookup(policy, stale=False)
        return self._serve_stale(tenant_id, entry)

    def close(self) -> None:
        """Stop the listener thread and close connections."""
        self._listener.close()
        self._client.close()

    def __enter__(self) -> RedisPolicyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------------------
    def _fetch(self, tenant_id: str) -> TenantPolicy | None:
        raw = self._client.get(policy_key(tenant_id))
        if not raw:
            return None
        stored = read_policy(tenant_id, raw)
        if stored.ignored and self._first_report(tenant_id, f"ignored:{stored.policy.version}"):
            log.warning(
                "policy_fields_ignored",
                tenant_id=tenant_id,
                policy_version=stored.policy.version,
                fields=list(stored.ignored),
            )
        return stored.policy

    def _first_report(self, tenant_id: str, what: str) -> bool:
        """True the first time ``what`` is reported for the tenant (per document, not per event)."""
        with self._lock:
            seen = self._reported.setdefault(tenant_id, set())
            if what in seen:
                return False
            seen.add(what)
            return True

    def _remember_invalid(self, tenant_id: str, entry: _Entry | None, reason: str, generation: int) -> _Entry:
        """Keep the last valid policy (if any) and note why the stored one was refused; log it once."""
        last = entry.policy if entry is not None else None
        if self._first_report(tenant_id, f"invalid:{reason}"):
            log.error(
                "policy_invalid",
                tenant_id=tenant_id,
                reason=reason,
                serving=f"last valid version {last.version}" if last else "nothing: events dead-lettered",
            )
        with self._lock:
            fresh = self._generation.get(tenant_id, 0) == generation
            new = _Entry(last, time.monotonic(), fresh, invalid=reason)
            self._cache[tenant_id] = new
        return new

    @staticmethod
    def _cached(tenant_id: str, entry: _Entry) -> PolicyLookup | None:
        if entry.invalid is None:
            return _as_lookup(entry.policy, stale=False)
        if entry.policy is None:
            raise PolicyInvalid(entry.invalid)
        return _as_lookup(entry.policy, stale=True)

    def _admin(self, call: Any) -> Any:
        try:
            return call()
        except RedisError as exc:
            raise PolicyStoreUnavailable(f"policy store {self._where()} unreachable: {exc}") from exc

    def _where(self) -> str:
        kwargs = self._client.connection_pool.connection_kwargs
        return f"redis {kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    def _remember(self, tenant_id: str, policy: TenantPolicy | None, generation: int) -> None:
        with self._lock:
            seen = self._reported.get(tenant_id, set())
            seen -= {what for what in seen if what.startswith("invalid:")}  # a later breakage is news again
            # An invalidation that raced with this fetch wins: keep the value but refetch next time.
            fresh = self._generation.get(tenant_id, 0) == generation
            self._cache[tenant_id] = _Entry(policy, time.monotonic(), fresh)

    def _invalidate(self, tenant_id: str | None) -> None:
        with self._lock:
            tenants = list(self._cache) if tenant_id is None else [tenant_id]
            for tenant in tenants:
                self._generation[tenant] = self._generation.get(tenant, 0) + 1
                if tenant in self._cache:
                    self._cache[tenant].fresh = False

    def _failed(self, exc: BaseException) -> None:
        if self._outage.failed():
            log.warning("policy_store_unreachable", where=self._where(), error=str(exc))

    def _serve_stale(self, tenant_id: str, entry: _Entry | None) -> PolicyLookup | None:
        if entry is None:
            raise PolicyStoreUnavailable(
                f"policy store {self._where()} unreachable and no cached policy for tenant {tenant_id!r}"
            )
        if entry.invalid is not None and entry.policy is None:
            raise PolicyInvalid(entry.invalid)
        if self._outage.first_warning(tenant_id):
            log.warning(
                "policy_served_stale",
                tenant_id=tenant_id,
                policy_version=entry.policy.version if entry.policy else None,
                where=self._where(),
            )
        return _as_lookup(entry.policy, stale=True)


def _as_lookup(policy: TenantPolicy | None, *, stale: bool) -> PolicyLookup | None:
    return PolicyLookup(policy=policy, stale=stale) if policy is not None else None

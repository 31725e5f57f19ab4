"""RedisPolicyStore against a real redis-server: versions, validation, pub/sub invalidation, outages."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from schemas.policy import Route, TenantPolicy
from schemas.taxonomy import Category, Taxonomy
from tests.helpers.redis_server import RedisServer
from workers.errors import PolicyInvalid, PolicyStoreUnavailable
from workers.policies.redis_store import RedisPolicyStore
from workers.settings import Settings


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_put_assigns_increasing_versions_and_get_list_delete(store_settings: Settings) -> None:
    with RedisPolicyStore(store_settings) as store:
        first = store.put(TenantPolicy(tenant_id="acme", threshold=0.4))
        second = store.put(TenantPolicy(tenant_id="acme", threshold=0.3))
        other = store.put(TenantPolicy(tenant_id="kidsplay", route=Route(model="small")))
        assert (first.version, second.version, other.version) == (1, 2, 1)
        assert second.updated_at is not None
        assert store.get("acme") == second
        assert [p.tenant_id for p in store.list()] == ["acme", "kidsplay"]
        assert store.delete("acme") is True
        assert store.delete("acme") is False
        assert store.get("acme") is None
        assert [p.tenant_id for p in store.list()] == ["kidsplay"]
        # The counter outlives delete: a re-created policy never reuses a version a cache may hold.
        assert store.put(TenantPolicy(tenant_id="acme")).version == 3


def test_invalid_policy_is_rejected_before_redis(store_settings: Settings) -> None:
    with pytest.raises(ValidationError):
        TenantPolicy.model_validate({"tenant_id": "acme", "threshold": 1.5})
    bad = TenantPolicy.model_construct(tenant_id="acme", threshold=1.5)
    with RedisPolicyStore(store_settings) as store:
        with pytest.raises(ValidationError):
            store.put(bad)
        assert store.get("acme") is None


def test_lookup_sees_change_from_another_store_within_2s(store_settings: Settings) -> None:
    # The max age is 30 s here, so only the pub/sub invalidation can make this pass.
    custom = Taxonomy(categories=(Category(code="C1", name="Spam"),))
    with RedisPolicyStore(store_settings) as admin, RedisPolicyStore(store_settings) as worker:
        assert worker.lookup("acme") is None
        admin.put(TenantPolicy(tenant_id="acme", threshold=0.4))
        assert wait_for(lambda: worker.lookup("acme") is not None, 2.0)
        started = time.monotonic()
        admin.put(TenantPolicy(tenant_id="acme", taxonomy=custom, threshold=0.2))
        assert wait_for(lambda: _version(worker, "acme") == 2, 2.0)
        assert time.monotonic() - started < 2.0
        found = worker.lookup("acme")
        assert found is not None and found.policy.taxonomy == custom and not found.stale
        admin.delete("acme")
        assert wait_for(lambda: worker.lookup("acme") is None, 2.0)


def _version(store: RedisPolicyStore, tenant_id: str) -> int | None:
    found = store.lookup(tenant_id)
    return found.policy.version if found else None


def test_redis_outage_serves_stale_policy_and_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    settings = Settings(redis_url=server.url, policy_refresh_s=0.2, redis_timeout_s=0.3)
    try:
        with RedisPolicyStore(settings) as store:
            store.put(TenantPolicy(tenant_id="acme", threshold=0.3))
            assert _version(store, "acme") == 1
            server.stop()
            time.sleep(0.3)  # past the max age, so lookups must try Redis and fall back
            for _ in range(20):
                found = store.lookup("acme")
                assert found is not None and found.stale and found.policy.threshold == 0.3
            with pytest.raises(PolicyStoreUnavailable):
                store.lookup("never-seen")
            with pytest.raises(PolicyStoreUnavailable):
                store.put(TenantPolicy(tenant_id="acme"))
            server.start()  # an empty Redis on the same port: the policy is gone
            assert wait_for(lambda: store.lookup("acme") is None, 10.0)
            store.put(TenantPolicy(tenant_id="acme", threshold=0.6))
            assert wait_for(lambda: _fresh_threshold(store, "acme") == 0.6, 2.0)
    finally:
        server.stop()


def _fresh_threshold(store: RedisPolicyStore, tenant_id: str) -> float | None:
    found = store.lookup(tenant_id)
    return found.policy.threshold if found and not found.stale else None


def _store_raw(settings: Settings, tenant_id: str, doc: str) -> None:
    """Write a policy document behind the store's back (another version, or corruption), and announce it."""
    import redis

    from workers.policies.redis_store import CHANNEL, TENANTS_KEY, policy_key

    with redis.Redis.from_url(settings.redis_url) as client:
        client.set(policy_key(tenant_id), doc)
        client.sadd(TENANTS_KEY, tenant_id)
        client.publish(CHANNEL, json.dumps({"tenant_id": tenant_id, "version": None}))


def test_policy_from_a_newer_version_is_read_without_its_unknown_fields(store_settings: Settings) -> None:
    newer = {"tenant_id": "acme", "threshold": 0.2, "version": 7, "priority": 3, "route": {"region": "eu"}}
    _store_raw(store_settings, "acme", json.dumps(newer))
    with RedisPolicyStore(store_settings) as store, capture_logs() as logs:
        found = store.lookup("acme")
        assert found is not None and found.policy.threshold == 0.2 and not found.stale
        assert [p.version for p in store.list()] == [7]
    ignored = [entry for entry in logs if entry["event"] == "policy_fields_ignored"]
    assert len(ignored) == 1 and ignored[0]["fields"] == ["route.region", "priority"]
    with pytest.raises(ValidationError):  # `policy set` still refuses what this version does not know
        TenantPolicy.model_validate(newer)


def test_invalid_stored_policy_keeps_the_last_valid_one_and_is_logged_once(store_settings: Settings) -> None:
    with RedisPolicyStore(store_settings) as admin, RedisPolicyStore(store_settings) as worker:
        admin.put(TenantPolicy(tenant_id="acme", threshold=0.3))
        assert _version(worker, "acme") == 1
        with capture_logs() as logs:
            _store_raw(store_settings, "acme", '{"tenant_id": "acme", "threshold": 7}')
            assert wait_for(lambda: _stale_threshold(worker, "acme") == 0.3, 2.0)
            for _ in range(50):
                assert _stale_threshold(worker, "acme") == 0.3
            assert [p.tenant_id for p in admin.list()] == []  # left out, not fatal
        assert len([entry for entry in logs if entry["event"] == "policy_invalid"]) == 2  # worker + list
        admin.put(TenantPolicy(tenant_id="acme", threshold=0.6))
        assert wait_for(lambda: _fresh_threshold(worker, "acme") == 0.6, 2.0)


def test_invalid_policy_of_a_tenant_never_seen_raises_policy_invalid(store_settings: Settings) -> None:
    _store_raw(store_settings, "acme", "{corrupt")
    with RedisPolicyStore(store_settings) as store:
        for _ in range(3):
            with pytest.raises(PolicyInvalid, match="not JSON"):
                store.lookup("acme")


def _stale_threshold(store: RedisPolicyStore, tenant_id: str) -> float | None:
    found = store.lookup(tenant_id)
    return found.policy.threshold if found and found.stale else None

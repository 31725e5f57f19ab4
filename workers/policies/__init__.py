"""Where tenant policies come from: Redis (live, cached, pub/sub-invalidated) or a file (backfill)."""

from workers.policies.base import PolicyLookup, PolicyStore, default_policy
from workers.policies.file_store import FilePolicyStore

__all__ = ["FilePolicyStore", "PolicyLookup", "PolicyStore", "default_policy"]

"""What runs inside a Ray actor: the guard-model runtime, replicas, stream consumers and the policy cache."""

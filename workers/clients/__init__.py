"""Clients of the outside services: the one place Kafka clients are built (``kafka``) and the TLS/SASL/ACL
options every Kafka and Redis client gets (``security``)."""

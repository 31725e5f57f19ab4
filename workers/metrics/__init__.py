"""Prometheus metrics of the stream workers and replicas, merged by the driver (docs/ARCHITECTURE.md)."""

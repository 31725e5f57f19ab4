"""``guardstream backfill``: score conversation archives on Ray Data into verdict Parquet and a report.

Modules, in the order data flows: ``sources`` (find files, cut shards) → ``rows`` (read + validate) →
``scoring`` (the stateful Ray Data replica) → ``job`` (the pipeline and per-shard completion) → ``sinks``
(Parquet, errors, Kafka) with ``manifest`` / ``plan`` (resume) and ``summary`` / ``report`` (the numbers).
"""

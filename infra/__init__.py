"""How the real services start: local Apache Kafka (KRaft), Redis and Ray; deployment manifests."""

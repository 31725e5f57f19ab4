"""The Kafka-side commands: ``stream`` (``run``), ``demo``, ``produce`` and ``topics``."""

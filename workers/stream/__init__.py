"""The Kafka side of a stream worker: consumer actor and loop, micro-batches, in-order offsets, sink."""

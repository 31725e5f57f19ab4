"""Flows that wire sources to sinks (stream, backfill, evaluation, fine-tuning) and the command line."""

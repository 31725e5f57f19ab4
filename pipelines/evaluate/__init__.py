"""``guardstream eval``: AUPRC of a scorer on eval rows (``rows``), metrics, report, dataset converters."""

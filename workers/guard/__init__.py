"""The guard-model runtime: prompt formats, output parsing, model loading, prefix cache and the scorer."""

"""Benchmarking: method plans, test sources, the cached run, aggregation, the report, built-in data."""

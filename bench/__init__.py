"""Benchmarks: each measures the broker against a baseline in the same run and writes JSON."""

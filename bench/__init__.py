"""Benchmarks (not tests): duraplan's latency and throughput against hand-written Temporal workflows."""

"""Benchmark harness behind ``hrnet-fast bench`` and ``benchmarks/``: timers, suites, reports."""

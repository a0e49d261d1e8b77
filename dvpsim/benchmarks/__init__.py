"""Benchmarks run by `dvpsim bench NAME`; each module has `run(quick: bool) -> dict`."""

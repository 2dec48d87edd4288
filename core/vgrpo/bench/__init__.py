"""Benchmarks: ``python -m vgrpo.bench <name>``. Figures go to docs/benchmarks.md."""

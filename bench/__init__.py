"""Benchmarks: `make bench` (or `python -m bench`). Each measures its baseline in the same run."""

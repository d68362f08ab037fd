"""Benchmarks (``make bench``): each compares Hades against a raw baseline measured in the same run."""

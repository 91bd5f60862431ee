"""Benchmarks for call-enricher (`make bench`). Figures are ratios measured in one run."""

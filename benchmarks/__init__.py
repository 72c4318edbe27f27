"""Benchmarks of torch_geometric_sdt (run ``python -m benchmarks --help``)."""

"""swarmrun's throughput benchmarks against its baselines: `python -m benchmarks [--quick]`.

Scripts, not tests: they print a table of ratios and write a CSV and a PNG (docs/benchmarks.md).
"""

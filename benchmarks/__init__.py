"""Benchmarks anyone can re-run; results go to benchmarks/results/ as CSV (+ a .meta.json)."""

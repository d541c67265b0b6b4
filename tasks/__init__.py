"""Benchmark tasks: data, model head and metrics for each task of the matrix."""

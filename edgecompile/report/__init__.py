"""Accuracy-vs-latency reports: every candidate recipe compiled, measured and set on a Pareto front."""

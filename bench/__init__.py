"""Benchmarks of the daemon against a minimal trio supervisor (the floor)."""

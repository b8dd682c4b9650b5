"""Compatibility layers: the seeds' own Python APIs running on syncworker."""

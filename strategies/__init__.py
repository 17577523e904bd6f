"""Flower strategies and wrappers: residency guard, secure aggregation, DP budget, audit (#4)."""

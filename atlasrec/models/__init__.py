"""Recommendation models: the ID-free shared backbone and the tenant-local parts."""

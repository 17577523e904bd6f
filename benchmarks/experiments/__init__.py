"""Experiments: A/A false positives, and interleaving against A/B on the same pair."""

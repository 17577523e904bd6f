"""Audit: the append-only hash-chained ledger per region, lineage, the privacy officer UI."""

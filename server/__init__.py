"""Flower ServerApp: one aggregator per region; round orchestration (issue #4)."""

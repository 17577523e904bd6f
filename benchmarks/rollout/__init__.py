"""The rollout analysis benchmark: its sequential test simulated (A/A, decision sizes)."""

"""End-to-end operations behind the CLI commands (train, recommend, evaluate, privacy report)."""

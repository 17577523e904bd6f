"""Regional serving: retrieval -> ranking -> re-ranking -> policy filter (issue #5)."""

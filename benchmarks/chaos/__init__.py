"""The chaos suite: a region's real processes under injected faults (`scripts/bench chaos`)."""

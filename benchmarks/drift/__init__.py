"""The drift benchmark: false alarms over unshifted replays, detection of synthetic shifts."""

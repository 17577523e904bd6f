"""The global control plane: tenants, policies, API-key hashes, regions. No user-level data."""

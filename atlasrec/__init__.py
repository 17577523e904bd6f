"""AtlasRec: privacy-preserving, multi-tenant, multi-region recommendations."""

__version__ = "0.1.0"

"""Tenant data sets: a MovieLens-derived tenant mix and seeded synthetic retail tenants."""

from atlasrec.datasets.movielens import (
    MOVIELENS_DIR,
    MOVIELENS_TENANTS,
    MovieLensTenant,
    build_movielens_tenant_mix,
)
from atlasrec.datasets.spec import (
    INTERACTIONS_HEADER,
    ITEMS_HEADER,
    TenantDataset,
    format_tenant_table,
)
from atlasrec.datasets.synthetic import (
    EVENT_WEIGHTS,
    EVENTS,
    RETAIL_CATEGORIES,
    SIZE_PRESETS,
    SyntheticTenantSpec,
    generate_synthetic_tenant,
    synthetic_fleet,
)

__all__ = [
    "EVENTS",
    "EVENT_WEIGHTS",
    "INTERACTIONS_HEADER",
    "ITEMS_HEADER",
    "MOVIELENS_DIR",
    "MOVIELENS_TENANTS",
    "RETAIL_CATEGORIES",
    "SIZE_PRESETS",
    "MovieLensTenant",
    "SyntheticTenantSpec",
    "TenantDataset",
    "build_movielens_tenant_mix",
    "format_tenant_table",
    "generate_synthetic_tenant",
    "synthetic_fleet",
]

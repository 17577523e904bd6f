"""Flower ClientApp: one per tenant, in its home region, training with Opacus (issue #4)."""

"""Flower simulations of many tenants and regions, with failure injection (issue #4)."""

"""commy: hierarchical, multi-tenant shared-memory coordination, built on a sans-IO actor core."""

__version__ = "0.1.0"

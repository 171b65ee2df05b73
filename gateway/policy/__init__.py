"""Scope policies, lineage and decisions (pure)."""

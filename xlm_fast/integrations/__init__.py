"""Interop with other libraries; each imports its library lazily, inside its functions."""

from .transformers import apply_to_transformers, from_transformers, to_transformers

__all__ = ["apply_to_transformers", "from_transformers", "to_transformers"]

"""Fused Triton kernels of the xlm_fast forward path, one file per fused op.

Kernels only: no nn.Modules here. xlm_fast/backend.py decides when they run.
"""

"""Triton kernels of hrnet_fast, installed as ``hrnet_fast.kernels``.

Kernels here know tensors and pointers, never modules; ``hrnet_fast.ops`` is the only caller.
"""

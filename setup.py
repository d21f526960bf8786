"""Packaging for hrnet_fast.

`pip install -e .` is pure Python: it needs no GPU, no CUDA toolkit and no compiler. The folder
`kernels/` installs as `hrnet_fast.kernels`, so `hrnet_fast` is the only top-level import name.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["hrnet_fast", "hrnet_fast.*"]), "hrnet_fast.kernels"],
    package_dir={"hrnet_fast.kernels": "kernels"},
)

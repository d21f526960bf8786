"""Packaging for hrnet_fast.

`pip install -e .` is pure Python: it needs no GPU, no CUDA toolkit and no compiler. The folder
`kernels/` installs as `hrnet_fast.kernels`, so `hrnet_fast` is the only top-level import name, and
the C++/CUDA sources in `csrc/` travel with the package as data (`hrnet_fast/csrc` in a wheel or a
non-editable install), so the just-in-time build of the `cpp` backend works from any install.

`HRNET_FAST_BUILD_EXT=1 pip install --no-build-isolation -e .` also builds the C++/CUDA op library
`hrnet_fast._C` ahead of time (with the torch already installed; CUDA kernels when torch has CUDA and
nvcc is found), with the sources and flags of the just-in-time build in `hrnet_fast/_ext.py`.
"""

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def _extension_build() -> dict:
    if os.environ.get("HRNET_FAST_BUILD_EXT") != "1":
        return {}
    from torch.utils import cpp_extension

    spec = importlib.util.spec_from_file_location("_hrnet_fast_ext", HERE / "hrnet_fast" / "_ext.py")
    ext = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    with_cuda = ext.cuda_toolchain_problem() is None
    if with_cuda:
        cpp_extension.CUDA_HOME = ext.cuda_home()
    flags = ext.build_flags(with_cuda, native_cpu=False)
    kind = cpp_extension.CUDAExtension if with_cuda else cpp_extension.CppExtension
    library = kind(
        "hrnet_fast._C",
        [str(p.relative_to(HERE)) for p in ext.sources(with_cuda)],
        include_dirs=[str(ext.SOURCE_DIR)],
        extra_compile_args={"cxx": flags["cxx"], "nvcc": flags.get("nvcc", [])},
        extra_link_args=flags["ldflags"],
    )
    return {"ext_modules": [library], "cmdclass": {"build_ext": cpp_extension.BuildExtension}}


setup(
    packages=[*find_packages(include=["hrnet_fast", "hrnet_fast.*"]), "hrnet_fast.kernels", "hrnet_fast.csrc"],
    package_dir={"hrnet_fast.kernels": "kernels", "hrnet_fast.csrc": "csrc"},
    package_data={
        "hrnet_fast.csrc": [f"{folder}*.{ext}" for folder in ("", "*/") for ext in ("h", "cuh", "cpp", "cu")]
    },
    **_extension_build(),
)

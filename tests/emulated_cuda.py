"""The cpp backend's CUDA kernels emulated on the host, for tests on machines without a GPU.

``test_cpp_emulated_cuda.cpp`` compiles the torch-free CUDA kernels for the host (every thread of
every launch run in a loop; the tiled fusion_branch kernel phase by phase, with ldmatrix and mma.sync
emulated) behind the real op frontends, as the CPU kernels of the ops
``hrnet_fast_emulated_cuda::<op>_cpp``; they are defined here from the registry's schemas, like the
cpp backend's own ops.
"""

from __future__ import annotations

import functools
from pathlib import Path

from hrnet_fast import _ext
from hrnet_fast.ops import registry

NAMESPACE = "hrnet_fast_emulated_cuda"


@functools.cache
def emulated_library() -> registry.OpLibrary:
    """Build (once per source fingerprint) and load the emulation; its ops as ``library.<op>``."""
    source = Path(__file__).resolve().parent / "test_cpp_emulated_cuda.cpp"
    frontends = sorted(_ext.SOURCE_DIR.glob("*.cpp"))  # the op frontends (csrc/cpu/*.cpp register kernels)
    _ext.build_and_load(NAMESPACE, [source, *frontends], with_cuda=False)
    library = registry.OpLibrary(NAMESPACE, "cpp")
    library.define_compiled(("cpu",))
    return library

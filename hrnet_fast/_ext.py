"""Build and load ``hrnet_fast._C``, the compiled kernels of the ``cpp`` backend (sources in ``csrc/``).

The library registers C++ kernels for the custom ops ``hrnet_fast::<op>_cpp`` per dispatch key (CPU,
and CUDA when built with it); the ops themselves (schemas, fake, autograd) are defined by the ``cpp``
backend (``hrnet_fast/ops/backends/cpp.py``). It comes from, in order:

1. an ahead-of-time build next to this file (``hrnet_fast/_C.<abi>.so``, made by
   ``HRNET_FAST_BUILD_EXT=1 pip install --no-build-isolation -e .``), unless a file in ``csrc/`` is
   newer than it;
2. a just-in-time build (``torch.utils.cpp_extension`` + ninja) into ``<cache>/hrnet_fast_C-<hash>``,
   <cache> being ``$HRNET_FAST_CACHE_DIR``, else ``$XDG_CACHE_HOME/hrnet_fast``, else
   ``~/.cache/hrnet_fast``, and <hash> covering the sources, the flags, torch, Python and the CPU (the
   CPU kernels are built with ``-march=native``). It is built once, with a one-line notice on
   stderr, and reused by every later process.

Every ``csrc/*.cpp``, ``csrc/cpu/*.cpp`` and ``csrc/runtime/*.cpp`` is compiled, plus ``csrc/cuda/*.cu`` and
``csrc/cuda/*.cpp`` when torch has CUDA and nvcc is found: adding an op's kernels means adding its
files, no list to edit. If the CUDA build fails, the CPU-only library is built and the reason is
kept for the backend to report. The sources travel with the package (a wheel installs them as
``hrnet_fast/csrc``; a source checkout has them in ``csrc/`` at the top), so the just-in-time build
works from any install. Nothing here runs at ``import hrnet_fast``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import os
import platform
import re
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

LIBRARY_NAME = "hrnet_fast_C"
PACKAGE_DIR = Path(__file__).resolve().parent
CACHE_ENV = "HRNET_FAST_CACHE_DIR"


def _source_dir() -> Path:
    """``csrc/`` inside the installed package (wheels), else at the top of the source checkout."""
    installed = PACKAGE_DIR / "csrc"
    return installed if installed.is_dir() else PACKAGE_DIR.parent / "csrc"


SOURCE_DIR = _source_dir()
_SOURCE_SUFFIXES = (".h", ".cuh", ".cpp", ".cu")


class ExtensionBuildError(RuntimeError):
    """The extension could not be built or loaded; the message holds the compiler's error."""


def cache_dir() -> Path:
    """Where just-in-time builds go (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "hrnet_fast"


def sources(with_cuda: bool, source_dir: Path = SOURCE_DIR) -> list[Path]:
    """The translation units: the op frontends (``*.cpp`` at the top), ``cpu/`` kernels, ``runtime/``
    (code that is no op's: the plan replay); with CUDA also ``cuda/*.cu|cpp``."""
    patterns = ["*.cpp", "cpu/*.cpp", "runtime/*.cpp"] + (["cuda/*.cu", "cuda/*.cpp"] if with_cuda else [])
    return sorted(p for pattern in patterns for p in source_dir.glob(pattern))


def cuda_home() -> str | None:
    """A CUDA toolkit with nvcc and headers: $CUDA_HOME / $CUDA_PATH, nvcc's own folder, /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    for home in filter(None, candidates):
        if (Path(home) / "bin" / "nvcc").exists() and (Path(home) / "include" / "cuda_runtime_api.h").exists():
            return home
    return None


def cuda_toolchain_problem() -> str | None:
    """None when this torch and machine can compile the CUDA kernels, else why not."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    if cuda_home() is None:
        return "no CUDA toolkit found (nvcc and cuda_runtime_api.h; set CUDA_HOME)"
    return None


def _cuda_arch_flags() -> list[str]:
    """sm_90 (H100/H200), the archs in $TORCH_CUDA_ARCH_LIST (else those of the visible GPUs)."""
    archs = {"9.0"}
    listed = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    if listed:
        archs |= {a for a in re.split(r"[\s;]+", listed) if re.fullmatch(r"\d+\.\d+a?(\+PTX)?", a)}
    else:
        archs |= {"{}.{}".format(*torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())}
    flags = []
    for arch in sorted(archs):
        number = arch.removesuffix("+PTX").replace(".", "")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{number},code=compute_{number}")
    return flags


def build_flags(with_cuda: bool, native_cpu: bool = True) -> dict[str, list[str]]:
    """Compiler and linker flags. ``native_cpu`` tunes the CPU kernels for this machine's CPU (AVX2,
    AVX-512: about 1.25x on the CPU op), for just-in-time builds, whose cache key names the CPU; the
    ahead-of-time build passes False and stays portable."""
    flags = {"cxx": ["-O3", "-fopenmp", "-fvisibility=hidden"], "ldflags": ["-fopenmp"]}
    if native_cpu:
        flags["cxx"].append("-march=native")
    if with_cuda:
        flags["nvcc"] = ["-O3", "-Xcompiler=-fvisibility=hidden", *_cuda_arch_flags()]
    return flags


def _host_cpu() -> str:
    """This machine's CPU model and features, for the cache key of -march=native builds."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return "\n".join(next((ln for ln in lines if ln.startswith(key)), "") for key in ("model name", "flags"))


def _fingerprint(name: str, files: list[Path], flags: dict[str, list[str]], include_dirs: list[Path]) -> str:
    """What a build depends on: the flags, torch, Python, the CPU (native builds), every file under
    ``csrc/`` and ``files``; a third-party library by its include folders' paths and its link flags
    (which name its versioned file)."""
    digest = hashlib.sha256()
    for part in (name, torch.__version__, str(torch.version.cuda), sys.version, repr(sorted(flags.items()))):
        digest.update(part.encode())
    digest.update(repr([str(d) for d in include_dirs]).encode())
    if "-march=native" in flags["cxx"]:
        digest.update(_host_cpu().encode())
    tree = sorted({p for p in SOURCE_DIR.rglob("*") if p.suffix in _SOURCE_SUFFIXES} | set(files))
    for path in tree:
        digest.update(str(path).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _summarize(log: str, lines: int = 6) -> str:
    """The compiler's first error lines (or the log's last lines), joined for a one-paragraph reason."""
    errors = [ln.strip() for ln in log.splitlines() if re.search(r"\berror\b", ln, re.IGNORECASE)]
    errors = [ln for ln in errors if not ln.startswith(("ninja: build stopped", "FAILED:"))]
    picked = errors[:lines] or [ln.strip() for ln in log.strip().splitlines()[-lines:]]
    return " | ".join(picked)


def build_and_load(
    name: str,
    files: list[Path],
    *,
    with_cuda: bool,
    include_dirs: list[Path] | None = None,
    ldflags: list[str] | None = None,
) -> Path:
    """Build ``files`` into the cached library ``name`` (once per fingerprint) and load it into torch.
    ``include_dirs`` and ``ldflags``: a third-party library's headers and link flags.

    Returns the library's path; raises :class:`ExtensionBuildError` with the compiler's message.
    """
    include_dirs = [SOURCE_DIR, *(include_dirs or [])]
    flags = build_flags(with_cuda)
    flags["ldflags"] = [*flags["ldflags"], *(ldflags or [])]
    build_dir = cache_dir() / f"{name}-{_fingerprint(name, files, flags, include_dirs)}"
    library, done = build_dir / f"{name}.so", build_dir / "complete"
    if not (done.exists() and library.exists()):
        _build(name, files, flags, include_dirs, build_dir, with_cuda)
        done.touch()
    torch.ops.load_library(str(library))
    return library


def _build(name, files, flags, include_dirs, build_dir, with_cuda) -> None:
    from torch.utils import cpp_extension  # heavy; only when something must be built

    if with_cuda:  # torch guesses CUDA_HOME from nvcc's path, which a wrapper script can hide
        cpp_extension.CUDA_HOME = cuda_home()
    what = "CPU and CUDA kernels" if with_cuda else "CPU kernels"
    print(
        f"hrnet_fast: compiling {name} ({what}) into {build_dir}; first use only, about a minute",
        file=sys.stderr,
        flush=True,
    )
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        cpp_extension.load(
            name=name,
            sources=[str(f) for f in files],
            extra_cflags=flags["cxx"],
            extra_cuda_cflags=flags.get("nvcc"),
            extra_ldflags=flags["ldflags"],
            extra_include_paths=[str(d) for d in include_dirs],
            build_directory=str(build_dir),
            with_cuda=with_cuda,
            is_python_module=False,
        )
    except Exception as exc:
        log = build_dir / "build-error.log"
        log.write_text(str(exc))
        raise ExtensionBuildError(f"building it failed: {_summarize(str(exc))} (full log: {log})") from exc


def aot_library(
    package_dir: Path = PACKAGE_DIR,
    source_dir: Path = SOURCE_DIR,
    suffixes: list[str] = importlib.machinery.EXTENSION_SUFFIXES,
) -> Path | None:
    """The ahead-of-time build ``package_dir/_C<suffix>``, unless missing or older than a file in csrc/."""
    for suffix in suffixes:
        library = package_dir / f"_C{suffix}"
        if not library.exists():
            continue
        newest = max((p.stat().st_mtime for p in source_dir.rglob("*") if p.suffix in _SOURCE_SUFFIXES), default=0)
        if newest <= library.stat().st_mtime:
            return library
        print(
            f"hrnet_fast: {library.name} is older than csrc/; building just in time instead "
            "(rerun the ahead-of-time install to refresh it)",
            file=sys.stderr,
            flush=True,
        )
    return None


@dataclass(frozen=True)
class Loaded:
    path: Path
    cuda_problem: str | None  # why the library was built without CUDA kernels; None when not known to


_load_lock = threading.Lock()


def _once(load):
    """``load`` run once per process, under the load lock; its failure (ExtensionBuildError, or the
    OSError of a library that does not load: missing symbols, wrong torch) is kept and raised again
    on later calls, without building again."""

    @functools.cache
    def outcome():
        try:
            return load()
        except ExtensionBuildError as exc:
            return exc
        except OSError as exc:
            return ExtensionBuildError(f"loading it failed: {exc}")

    @functools.wraps(load)
    def loaded():
        with _load_lock:
            result = outcome()
        if isinstance(result, ExtensionBuildError):
            raise ExtensionBuildError(str(result)) from result.__cause__
        return result

    def already():
        """What ``load`` returned if it already ran and succeeded in this process, else None (never loads)."""
        if outcome.cache_info().currsize == 0:
            return None
        result = outcome()
        return None if isinstance(result, ExtensionBuildError) else result

    loaded.already = already
    return loaded


@_once
def load() -> Loaded:
    """Load the library once per process (building it if needed); raises ExtensionBuildError, also
    on later calls, without building again."""
    aot = aot_library()
    if aot is not None:
        torch.ops.load_library(str(aot))
        return Loaded(aot, None)
    if not SOURCE_DIR.is_dir():
        raise ExtensionBuildError(f"its sources ({SOURCE_DIR}) are not installed; reinstall hrnet-fast")
    return _load_just_in_time()


def loaded_library() -> Loaded | None:
    """``hrnet_fast._C`` if :func:`load` already loaded it in this process (as the ``cpp`` backend's
    first op does), else None: for helpers that are worth a library in use but not a build."""
    return load.already()


def _load_just_in_time() -> Loaded:
    cuda_problem = cuda_toolchain_problem()
    if cuda_problem is None:
        try:
            return Loaded(build_and_load(LIBRARY_NAME, sources(True), with_cuda=True), None)
        except ExtensionBuildError as exc:
            cuda_problem = f"the CUDA build failed, so the library was built for the CPU only: {exc}"
    return Loaded(build_and_load(LIBRARY_NAME, sources(False), with_cuda=False), cuda_problem)


ONEDNN_LIBRARY_NAME = "hrnet_fast_onednn"
ONEDNN_PACKAGES = "onednn-cpu-gomp onednn-devel-cpu-gomp"  # pip: oneDNN built for GNU OpenMP, and its headers


def onednn_files(prefix: Path = Path(sys.prefix)) -> tuple[Path, Path] | None:
    """(include folder, shared library) of the pip-installed oneDNN under ``prefix``, or None."""
    include, library = prefix / "include", prefix / "lib" / "libdnnl.so.3"
    if (include / "oneapi" / "dnnl" / "dnnl.hpp").exists() and library.exists():
        return include, library
    return None


@_once
def load_onednn() -> Path:
    """Load ``hrnet_fast_onednn`` (``csrc/onednn/``: convolutions through oneDNN's primitive API,
    linked against the pip-installed oneDNN) once per process, building it just in time on first
    use; raises ExtensionBuildError (also on later calls) where oneDNN is missing or the build fails."""
    files = onednn_files()
    if files is None:
        raise ExtensionBuildError(f"oneDNN is not installed (pip install {ONEDNN_PACKAGES})")
    include, library = files
    source = SOURCE_DIR / "onednn" / "onednn_conv.cpp"
    if not source.exists():
        raise ExtensionBuildError(f"its source ({source}) is not installed; reinstall hrnet-fast")
    real = library.resolve()  # libdnnl.so.3.<minor>: the version goes into the cache key
    return build_and_load(
        ONEDNN_LIBRARY_NAME,
        [source],
        with_cuda=False,
        include_dirs=[include],
        ldflags=[str(real), f"-Wl,-rpath,{library.parent}"],
    )

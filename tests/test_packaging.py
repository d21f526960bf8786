"""A built wheel is a working install: it carries the Triton kernels and the C++/CUDA sources, so the
``cpp`` backend's just-in-time build finds them outside a source checkout (building is not needed
here: tests/test_cpp_build.py builds from the checkout)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from hrnet_fast import _ext

ROOT = Path(__file__).resolve().parents[1]


def _pip(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_wheel_installed_elsewhere_finds_its_cpp_sources(tmp_path):
    tree = tmp_path / "tree"  # a copy, so the build writes nothing into the checkout
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "tests"))
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(tree))
    (wheel,) = (tmp_path / "dist").glob("hrnet_fast-*.whl")
    _pip("install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel))
    probe = (
        "import json, hrnet_fast, hrnet_fast.kernels.fusion_branch as k; from hrnet_fast import _ext; "
        "sources = [str(p) for p in _ext.sources(True)]; "
        "print(json.dumps([hrnet_fast.__file__, str(_ext.SOURCE_DIR), sources, k.__file__]))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    package, source_dir, sources, kernel = json.loads(result.stdout)
    site = str(tmp_path / "site")
    assert package.startswith(site) and kernel.startswith(site)
    assert source_dir == str(tmp_path / "site" / "hrnet_fast" / "csrc")
    in_checkout = [str(p.relative_to(_ext.SOURCE_DIR)) for p in _ext.sources(True)]
    assert sorted(str(Path(p).relative_to(source_dir)) for p in sources) == sorted(in_checkout)
    # every source and header, also those of the separately built libraries (csrc/onednn/)
    files = {p.relative_to(_ext.SOURCE_DIR) for p in _ext.SOURCE_DIR.rglob("*") if p.suffix in _ext._SOURCE_SUFFIXES}
    assert Path("onednn/onednn_conv.cpp") in files
    assert all((Path(source_dir) / f).is_file() for f in files)


def test_a_checkout_on_pythonpath_imports_without_an_install():
    """The GPU machine may run a checkout through PYTHONPATH: ``kernels/`` must still import as
    ``hrnet_fast.kernels`` (the editable install's finder, which would map it, is dropped first)."""
    probe = (
        "import json, sys; "
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]; "
        "import hrnet_fast.ops, hrnet_fast.kernels.fusion_branch as k; "
        "print(json.dumps([hrnet_fast.__file__, k.__file__, hrnet_fast.kernels.interpreted()]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    package, kernel, interpreted = json.loads(result.stdout)
    assert package == str(ROOT / "hrnet_fast" / "__init__.py")
    assert kernel == str(ROOT / "kernels" / "fusion_branch.py")
    assert interpreted is True

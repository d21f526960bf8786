"""VersionSum (hrnet_fast/nn/version_sum.py): the sum of tensors' version counters, in C++ where
hrnet_fast._C is loaded and in Python elsewhere, grows with every in-place change to any of them."""

from __future__ import annotations

import copy

import pytest
import torch

import hrnet_fast._ext as ext
from hrnet_fast.nn.version_sum import VersionSum


@pytest.mark.parametrize("native", [True, False], ids=["cpp", "python"])
def test_the_sum_grows_with_every_in_place_change_to_any_tensor(monkeypatch, native):
    if native:
        ext.load()
    else:
        monkeypatch.setattr(ext, "loaded_library", lambda: None)
    tensors = [torch.randn(3) for _ in range(5)]
    versions = VersionSum(tensors)
    start = versions()
    assert start == sum(t._version for t in tensors)
    assert (versions._native is not None) == native
    seen = [start]
    for t in (tensors[4], tensors[0], tensors[4]):
        t.add_(1)
        seen.append(versions())
    assert seen == sorted(set(seen))  # strictly increasing
    assert versions() == sum(t._version for t in tensors)
    torch.randn(3).add_(1)  # another tensor's change leaves it as it was
    assert versions() == seen[-1]


def test_inference_tensors_are_left_out_and_copies_count_their_own_tensors():
    ext.load()
    with torch.inference_mode():
        frozen = torch.randn(3)
    live = torch.randn(3)
    versions = VersionSum([frozen, live])
    assert versions.tensors == [live]
    before = versions()
    twin = copy.deepcopy(versions)
    assert twin._native is None and twin.tensors[0] is not live
    twin_before = twin()
    twin.tensors[0].mul_(2)
    assert twin() > twin_before and versions() == before

"""load_checkpoint: round trips, wrappers and prefixes, and readable errors on a mismatch."""

from __future__ import annotations

import pytest
import torch

from hrnet_fast import CheckpointError, CheckpointMismatchError, HRNet, load_checkpoint


@pytest.fixture(scope="module")
def pose():
    return HRNet("w18_small_v1", head="pose").eval()


def _randomized(model):
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    return {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in sd.items()}


def test_save_then_load_round_trips_through_a_file(tmp_path, pose):
    sd = _randomized(pose)
    torch.save(sd, tmp_path / "ckpt.pth")
    fresh = HRNet("w18_small_v1", head="pose").eval()
    report = load_checkpoint(fresh, tmp_path / "ckpt.pth")
    assert report.missing == report.unexpected == report.stripped_prefixes == []
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, sd[k]), k


@pytest.mark.parametrize(
    ("wrap", "prefix"),
    [
        (lambda sd: {"state_dict": sd, "epoch": 3}, None),
        (lambda sd: {"model": sd}, None),
        (lambda sd: {f"module.{k}": v for k, v in sd.items()}, "module."),
        (lambda sd: {f"backbone.{k}": v for k, v in sd.items()}, "backbone."),
        (lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, "module."),
    ],
)
def test_wrappers_and_prefixes_are_unwrapped(pose, wrap, prefix):
    sd = _randomized(pose)
    fresh = HRNet("w18_small_v1", head="pose")
    report = load_checkpoint(fresh, wrap(sd))
    assert report.stripped_prefixes == ([prefix] if prefix else [])
    assert all(torch.equal(v, sd[k]) for k, v in fresh.state_dict().items())


def test_segmentation_full_model_checkpoint_drops_its_loss_buffers():
    seg = HRNet("w18_small_v1", head="seg")
    sd = _randomized(seg)
    ckpt = {f"model.{k}": v for k, v in sd.items()} | {"loss.criterion.weight": torch.ones(19)}
    report = load_checkpoint(HRNet("w18_small_v1", head="seg"), ckpt)
    assert report.stripped_prefixes == ["model."] and report.dropped == ["loss.criterion.weight"]


def test_checkpoint_for_another_arch_names_it_and_lists_shape_mismatches():
    w18 = HRNet("w18", head="pose").state_dict()
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(HRNet("w32", head="pose"), w18)
    message = str(err.value)
    assert "looks like arch 'w18' with head 'pose'" in message
    assert "shape mismatches" in message
    assert "transition1.0.0.weight: checkpoint (18, 256, 3, 3), model (32, 256, 3, 3)" in message
    assert "stage2.0.branches.0.0.conv1.weight: checkpoint (18, 18, 3, 3), model (32, 32, 3, 3)" in err.value.mismatched
    assert len(err.value.mismatched) > 100


def test_checkpoint_for_another_head_lists_missing_and_unexpected_keys(pose):
    cls_sd = HRNet("w18_small_v1", head="cls").state_dict()
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(HRNet("w18_small_v1", head="pose"), cls_sd)
    message = str(err.value)
    assert "head 'cls'" in message
    assert "final_layer.weight" in err.value.missing
    assert "classifier.weight" in err.value.unexpected
    assert "missing keys" in message and "unexpected keys" in message


def test_non_strict_reports_instead_of_raising_but_never_loads_wrong_shapes(pose):
    sd = _randomized(pose)
    del sd["final_layer.bias"]
    sd["extra.weight"] = torch.zeros(1)
    report = load_checkpoint(HRNet("w18_small_v1", head="pose"), sd, strict=False)
    assert report.missing == ["final_layer.bias"] and report.unexpected == ["extra.weight"]
    sd["final_layer.weight"] = torch.zeros(16, 16, 1, 1)  # 16 joints into a 17-joint model
    with pytest.raises(CheckpointMismatchError, match=r"final_layer.weight: checkpoint \(16, 16, 1, 1\)"):
        load_checkpoint(HRNet("w18_small_v1", head="pose"), sd, strict=False)


def test_unreadable_files_are_clear_errors(tmp_path, pose):
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_checkpoint(pose, tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    torch.save(pose.state_dict(), corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="could not read checkpoint"):
        load_checkpoint(pose, corrupt)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": pose.state_dict(), "cfg": _Config()}, unsafe)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(pose, unsafe)
    with pytest.raises(CheckpointError, match="entries are not tensors"):
        load_checkpoint(pose, {"conv1.weight": [1, 2, 3]})
    with pytest.raises(CheckpointError, match="must be a state_dict"):
        load_checkpoint(pose, torch.zeros(3))


class _Config:
    """An arbitrary object: unpickling it needs code execution, so weights_only refuses it."""

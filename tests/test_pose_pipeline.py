"""The whole pipeline: geometry through crop, model, flip test and decoding; batching; datasets; models."""

from __future__ import annotations

import pytest
import torch
from pose_synthetic import make_dataset
from torch import nn

from hrnet_fast import CheckpointMismatchError, HRNet
from hrnet_fast.pose import (
    PoseEstimator,
    PoseInputError,
    Poses,
    ground_truth_boxes,
    load_keypoint_annotations,
    load_pose_model,
    rescore_and_suppress,
)
from hrnet_fast.pose.dataset import boxes_for_dataset, predict_dataset
from hrnet_fast.pose.preprocess import IMAGENET_MEAN, IMAGENET_STD


class StrideFourSampler(nn.Module):
    """A stand-in model whose every heatmap is the red intensity (0..1) at every 4th pixel: a bright dot
    at crop pixel q peaks at heatmap pixel q / 4, which is how the official decoding reads a heatmap."""

    num_joints = 17

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x):
        red = x[:, :1, ::4, ::4] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        return (red * self.gain).expand(-1, self.num_joints, -1, -1)


def _image_with_dots(height: int, width: int, dots: list[tuple[float, float]], sigma: float) -> torch.Tensor:
    ys = torch.arange(height, dtype=torch.float64).view(-1, 1)
    xs = torch.arange(width, dtype=torch.float64).view(1, -1)
    red = sum(torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in dots)
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[0] = (red * 255).round().to(torch.uint8)
    return image


@pytest.mark.parametrize(
    ("flip", "dark", "tolerance"),
    [(False, False, 1.1), (False, True, 0.02), (True, False, 1.6), (True, True, 0.6)],
)
def test_a_bright_dot_is_found_where_it_is_in_the_image(flip, dark, tolerance):
    """Crop pixels are about 1 image pixel here. The quarter rule errs by up to 1/4 heatmap pixel (1 crop
    pixel), DARK by almost nothing; the flip test's shifted mirror half sees this model's dot one crop
    pixel to the right, so flip-tested x coordinates move half a crop pixel (as officially)."""
    dots = [(61.3, 70.8), (177.6, 102.2)]
    image = _image_with_dots(200, 260, dots, sigma=8.0)
    boxes = torch.tensor([[30.0, 20.0, 70.0, 100.0], [140.0, 50.0, 80.0, 110.0]])
    estimator = PoseEstimator(StrideFourSampler(), (128, 96), flip=flip, dark=dark)
    poses = estimator.estimate(image, boxes)
    found = poses.keypoints[:, 0, :2]
    err = (found - torch.tensor(dots)).abs()
    assert err.max() < tolerance, err
    assert torch.equal(poses.keypoints[:, 0], poses.keypoints[:, 16])  # every joint sees the same dot


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return HRNet("w18_small_v1", head="pose").eval()


def test_batching_across_images_changes_nothing(tiny_model):
    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 90 + 10 * k, 120), generator=gen, dtype=torch.uint8) for k in range(4)]
    counts = [2, 0, 3, 1]
    boxes = [torch.rand(n, 4, generator=gen) * torch.tensor([60, 40, 50, 50]) + 5 for n in counts]
    items = list(zip("abcd", images, boxes, strict=True))
    single = {
        key: PoseEstimator(tiny_model, (32, 24), flip=False, batch_size=64).estimate(img, b) for key, img, b in items
    }
    for batch in (1, 4, 64):
        estimator = PoseEstimator(tiny_model, (32, 24), flip=False, batch_size=batch)
        streamed = list(estimator.estimate_stream(items))
        assert [k for k, _ in streamed] == list("abcd")
        for key, poses in streamed:
            assert poses.keypoints.shape == (counts["abcd".index(key)], 17, 3)
            for got, want in zip(poses, single[key], strict=True):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_rescoring_and_oks_nms_drop_a_duplicate_person():
    kp = torch.rand(1, 17, 3) * 50
    kp[..., 2] = 0.9
    twin = kp + torch.tensor([0.3, -0.2, -0.1])
    other = kp + torch.tensor([30.0, 0.0, 0.0])
    poses = Poses(torch.cat((twin, kp, other)), torch.zeros(3, 2), torch.full((3, 2), 0.5))
    kept, scores = rescore_and_suppress(poses, torch.tensor([1.0, 1.0, 0.5]))
    torch.testing.assert_close(kept.keypoints, torch.cat((kp, other)))
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.45]))


def test_a_dataset_is_predicted_and_unreadable_images_are_skipped_and_reported(tmp_path, tiny_model):
    data = make_dataset(tmp_path)
    (data.images / data.data["images"][1]["file_name"]).write_bytes(b"not an image at all")
    (data.images / data.data["images"][2]["file_name"]).unlink()
    coco = load_keypoint_annotations(data.ann)
    boxes, dropped = boxes_for_dataset(coco, ground_truth_boxes(coco))
    skipped, seen = [], []
    run = predict_dataset(
        PoseEstimator(tiny_model, (64, 48), batch_size=4),
        coco,
        boxes,
        data.images,
        workers=2,
        on_image=lambda: seen.append(1),
        on_skip=lambda i, why: skipped.append((i, why)),
    )
    assert dropped == 0 and len(seen) == 4
    assert [i for i, _ in skipped] == [2, 3]
    assert "could not decode" in skipped[0][1] and "not found" in skipped[1][1]
    assert run.skipped == dict(skipped) and run.images == 2
    assert {r["image_id"] for r in run.results} == {1, 4}
    assert all(len(r["keypoints"]) == 51 and r["score"] >= 0 for r in run.results)


def test_boxes_are_checked_against_the_annotated_image_sizes(tmp_path):
    data = make_dataset(tmp_path)
    coco = load_keypoint_annotations(data.ann)
    far = {1: (torch.tensor([[500.0, 10.0, 20.0, 20.0]]), torch.ones(1))}
    with pytest.raises(PoseInputError, match=r"image 1 \(000000000001.png\): box .* outside the 160x120 image"):
        boxes_for_dataset(coco, far)
    with pytest.raises(PoseInputError, match="no person boxes for any of the 4 images"):
        boxes_for_dataset(coco, {99: far[1]})
    with pytest.raises(FileNotFoundError, match="images folder not found"):
        predict_dataset(None, coco, {}, tmp_path / "missing")


def _save(model: nn.Module, path, prefix: str = "") -> str:
    torch.save({f"{prefix}{k}": v for k, v in model.state_dict().items()}, path)
    return str(path)


def test_pose_models_load_with_their_arch_read_from_the_checkpoint(tmp_path, tiny_model):
    path = _save(tiny_model, tmp_path / "w18s1.pth", prefix="module.")
    model = load_pose_model(path)
    assert model.arch.name == "w18_small_v1" and not model.training
    for a, b in zip(model.state_dict().values(), tiny_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_checkpoints_for_another_arch_or_joint_count_are_refused_clearly(tmp_path, tiny_model):
    other_arch = _save(HRNet("w18_small_v2", head="pose"), tmp_path / "w18s2.pth")
    with pytest.raises(CheckpointMismatchError, match="looks like arch 'w18_small_v2'"):
        load_pose_model(other_arch, "w18_small_v1")
    mpii = _save(HRNet("w18_small_v1", head="pose", num_joints=16), tmp_path / "mpii.pth")
    with pytest.raises(PoseInputError, match="predicts 16 joints"):
        load_pose_model(mpii)
    seg = _save(HRNet("w18_small_v1", head="seg"), tmp_path / "seg.pth")
    with pytest.raises(PoseInputError, match="no pose head.*'seg'"):
        load_pose_model(seg)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_pose_model(tmp_path / "nope.pth")

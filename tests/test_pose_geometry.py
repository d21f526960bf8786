"""Boxes to crops and back: center/scale, the affine matrices, the grid_sample crop, normalization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrnet_fast.pose import PoseInputError, box_to_center_scale
from hrnet_fast.pose.boxes import check_boxes
from hrnet_fast.pose.preprocess import IMAGENET_MEAN, IMAGENET_STD, person_crops
from hrnet_fast.pose.transforms import affine_crop, apply_affine, crop_matrices, invert_affine


def test_boxes_grow_to_the_aspect_ratio_and_are_padded_by_a_quarter():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 80.0], [0.0, 0.0, 120.0, 40.0], [5.0, 5.0, 75.0, 100.0]])
    center, scale = box_to_center_scale(boxes, aspect_ratio=0.75)
    torch.testing.assert_close(center, torch.tensor([[25.0, 60.0], [60.0, 20.0], [42.5, 55.0]]))
    # tall: w = 80 * 0.75; wide: h = 120 / 0.75; exact: unchanged; then * 1.25 / 200
    expected = torch.tensor([[60.0, 80.0], [120.0, 160.0], [75.0, 100.0]]) * 1.25 / 200
    torch.testing.assert_close(scale, expected)


def _official_matrix(center, scale, out_w, out_h, inverse=False):
    """get_affine_transform(center, scale, rot=0, (out_w, out_h)) from its three point pairs."""
    src_w = scale[0] * 200
    src = np.array([center, center + np.array([0, -src_w / 2]), [0, 0]], dtype=np.float64)
    dst = np.array([[out_w / 2, out_h / 2], [out_w / 2, out_h / 2 - out_w / 2], [0, 0]], dtype=np.float64)
    for pts in (src, dst):  # third point: b + rot90(a - b)
        d = pts[0] - pts[1]
        pts[2] = pts[1] + [-d[1], d[0]]
    if inverse:
        src, dst = dst, src
    a = np.concatenate((src, np.ones((3, 1))), axis=1)
    return np.linalg.solve(a, dst).T  # (2, 3): dst = M [src; 1]


def test_crop_matrices_equal_the_official_three_point_construction():
    center = torch.tensor([[100.0, 80.0], [33.5, 210.25]], dtype=torch.float64)
    scale = torch.tensor([[0.6, 0.8], [1.3, 1.7333]], dtype=torch.float64)
    ours = crop_matrices(center, scale, (256, 192))
    for k in range(2):
        expected = _official_matrix(center[k].numpy(), scale[k].numpy(), 192, 256)
        np.testing.assert_allclose(ours[k].numpy(), expected, atol=1e-10)
        back = _official_matrix(center[k].numpy(), scale[k].numpy(), 48, 64, inverse=True)
        np.testing.assert_allclose(invert_affine(crop_matrices(center, scale, (64, 48)))[k].numpy(), back, atol=1e-10)


def test_points_round_trip_through_crop_and_back():
    gen = torch.Generator().manual_seed(0)
    boxes = torch.rand(5, 4, generator=gen, dtype=torch.float64) * torch.tensor([300, 200, 150, 250]) + 1
    center, scale = box_to_center_scale(boxes, 192 / 256)
    points = torch.rand(5, 17, 2, generator=gen, dtype=torch.float64) * 400
    for size in ((256, 192), (64, 48)):
        m = crop_matrices(center, scale, size)
        torch.testing.assert_close(apply_affine(apply_affine(points, m), invert_affine(m)), points)
    # the box centre lands in the middle of the crop, the padded box spans its width
    m = crop_matrices(center, scale, (256, 192))
    torch.testing.assert_close(apply_affine(center[:, None], m)[:, 0], torch.tensor([[96.0, 128.0]] * 5).double())
    left_edge = center - torch.stack((scale[:, 0] * 100, torch.zeros(5, dtype=torch.float64)), 1)
    torch.testing.assert_close(apply_affine(left_edge[:, None], m)[:, 0, 0], torch.zeros(5, dtype=torch.float64))


def _bilinear_warp_reference(image: np.ndarray, matrix: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """warpAffine's definition, pixel by pixel: out[q] = image(M^-1 q), bilinear, zero outside."""
    c, h, w = image.shape
    full = np.vstack((matrix, [0, 0, 1]))
    inv = np.linalg.inv(full)
    out = np.zeros((c, out_h, out_w))
    for qy in range(out_h):
        for qx in range(out_w):
            sx, sy, _ = inv @ [qx, qy, 1]
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            fx, fy = sx - x0, sy - y0
            for dy, dx, wgt in (
                (0, 0, (1 - fx) * (1 - fy)),
                (0, 1, fx * (1 - fy)),
                (1, 0, (1 - fx) * fy),
                (1, 1, fx * fy),
            ):
                yy, xx = y0 + dy, x0 + dx
                if 0 <= yy < h and 0 <= xx < w:
                    out[:, qy, qx] += wgt * image[:, yy, xx]
    return out


def test_affine_crop_samples_where_the_matrix_says_with_zeros_outside():
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(3, 37, 53, generator=gen) * 255
    boxes = torch.tensor([[10.3, 5.7, 20.0, 25.0], [-8.0, 20.0, 30.0, 30.0], [40.5, -3.0, 20.0, 45.0]])
    center, scale = box_to_center_scale(boxes, 12 / 16)
    m = crop_matrices(center, scale, (16, 12))
    crops = affine_crop(image, m, (16, 12))
    assert crops.shape == (3, 3, 16, 12)
    for k in range(3):
        expected = _bilinear_warp_reference(image.double().numpy(), m[k].double().numpy(), 16, 12)
        np.testing.assert_allclose(crops[k].numpy(), expected, atol=2e-3, rtol=1e-5)
    assert (crops[1, :, :, 0] == 0).all()  # this box reaches past the left border
    assert (crops[1] > 0).any()


def test_person_crops_normalize_with_imagenet_statistics():
    image = torch.empty(3, 40, 30, dtype=torch.uint8)
    image[0], image[1], image[2] = 200, 100, 30
    inputs, center, scale = person_crops(image, torch.tensor([[-20.0, 5.0, 30.0, 30.0]]), (16, 12))
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1), torch.tensor(IMAGENET_STD).view(3, 1)
    inside = (torch.tensor([200.0, 100.0, 30.0]).view(3, 1) / 255 - mean) / std
    torch.testing.assert_close(inputs[0, :, 8, -1:], inside)
    torch.testing.assert_close(inputs[0, :, 8, :1], -mean / std)  # black outside the image
    assert inputs.dtype == torch.float32 and center.shape == scale.shape == (1, 2)
    half, *_ = person_crops(image, torch.tensor([[0.0, 0.0, 30.0, 40.0]]), (16, 12), torch.float16)
    assert half.dtype == torch.float16


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([200.0, 10.0, 20.0, 20.0], "lies outside the 100x80 image"),
        ([-30.0, 10.0, 30.0, 20.0], "lies outside the 100x80 image"),
        ([10.0, 10.0, 0.0, 20.0], "has no area"),
        ([10.0, float("nan"), 5.0, 20.0], "not finite"),
    ],
)
def test_boxes_outside_the_image_or_without_area_are_refused(box, message):
    boxes = torch.tensor([[1.0, 1.0, 10.0, 10.0], box])
    with pytest.raises(PoseInputError, match=f"image 7: box .* {message}"):
        check_boxes(boxes, 100, 80, "image 7")
    check_boxes(torch.tensor([[-5.0, -5.0, 10.0, 10.0]]), 100, 80, "partly outside is fine")

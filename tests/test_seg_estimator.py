"""SegEstimator against the official Cityscapes test, restated here: windows, scales, flip, averaging."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrnet_fast import HRNet, optimize
from hrnet_fast.seg import memory
from hrnet_fast.seg.estimator import IMAGENET_MEAN, IMAGENET_STD, SegEstimator
from hrnet_fast.seg.windows import crop_windows, scaled_size


def official_normalize(image: torch.Tensor) -> torch.Tensor:
    """(image / 255 - mean) / std per RGB channel, as float32 (1, 3, H, W)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image.float() / 255 - mean) / std)[None]


def random_image(height: int, width: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8)


class Pointwise(nn.Module):
    """Full-resolution logits: a 1x1 conv of each pixel, plus ``ramp`` x (column / crop width) in
    class 0, which makes the logits depend on where a pixel sits in its crop."""

    def __init__(self, classes: int = 4, ramp: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        self.ramp = ramp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        column = torch.arange(x.shape[-1], dtype=x.dtype) / x.shape[-1]
        out[:, 0] += self.ramp * column
        return out


def official_spans(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """Cityscapes.multi_scale_inference: rows = ceil((H - crop) / stride) + 1, each window moved back
    to end inside the image (an image no larger than the crop runs whole)."""
    if size <= crop:
        return [(0, size)]
    spans = []
    for r in range(math.ceil((size - crop) / stride) + 1):
        end = min(r * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def test_windows_follow_the_official_rule():
    assert crop_windows(1024, 2048, (1024, 2048)) == [(0, 1024, 0, 2048)]
    found = crop_windows(1280, 2560, (1024, 2048))  # scale 1.25 of a Cityscapes image: four windows
    assert found == [(0, 1024, 0, 2048), (0, 1024, 512, 2560), (256, 1280, 0, 2048), (256, 1280, 512, 2560)]
    stride = (682, 1365)  # the generic rule: 2/3 of the crop
    found = crop_windows(1792, 3584, (1024, 2048), stride)
    rows, cols = official_spans(1792, 1024, 682), official_spans(3584, 2048, 1365)
    assert found == [(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]
    assert len(rows) == 3 and rows[-1] == (768, 1792)
    assert crop_windows(800, 3000, (1024, 2048)) == [(0, 800, 0, 2048), (0, 800, 952, 3000)]


def test_scaled_size_is_the_official_resize():
    assert [scaled_size(1024, 2048, s) for s in (0.5, 0.75, 1.0, 1.25, 1.75)] == [
        (512, 1024),
        (768, 1536),
        (1024, 2048),
        (1280, 2560),
        (1792, 3584),
    ]
    assert scaled_size(500, 375, 0.5) == (250, 188)  # int(375 * 250 / 500 + 0.5)
    assert scaled_size(512, 1024, 1.0, base_size=2048) == (1024, 2048)


@pytest.mark.parametrize("crop", [(42, 60), (1024, 2048)])
def test_one_window_gives_the_official_whole_image_scores(crop):
    model = HRNet("w18_small_v1", head="seg", num_classes=5).eval()
    image = random_image(42, 60)
    with torch.no_grad():
        logits = F.interpolate(model(official_normalize(image)), size=(42, 60), mode="bilinear")
    scores = SegEstimator(model, crop_size=crop).scores(image)
    assert scores.shape == (5, 42, 60) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, logits[0].exp(), rtol=1e-5, atol=0)


def test_sliding_windows_average_to_the_whole_image_for_a_pointwise_model():
    model = Pointwise().eval()
    image = random_image(70, 100)
    whole = SegEstimator(model, crop_size=(70, 100)).scores(image)
    slid = SegEstimator(model, crop_size=(40, 64), stride=(24, 40)).scores(image)
    assert len(crop_windows(70, 100, (40, 64), (24, 40))) == 6
    torch.testing.assert_close(slid, whole, rtol=1e-5, atol=0)


def test_overlapping_windows_average_their_exp_logits():
    model = Pointwise(ramp=3.0).eval()
    image = random_image(50, 90)
    crop, stride = (32, 48), (20, 30)
    x = official_normalize(image)
    total, count = torch.zeros(4, 50, 90), torch.zeros(50, 90)
    with torch.no_grad():
        for y0, y1 in official_spans(50, crop[0], stride[0]):
            for x0, x1 in official_spans(90, crop[1], stride[1]):
                total[:, y0:y1, x0:x1] += model(x[..., y0:y1, x0:x1])[0].exp()
                count[y0:y1, x0:x1] += 1
    scores = SegEstimator(model, crop_size=crop, stride=stride).scores(image)
    assert count.min() >= 1 and count.max() > 1
    torch.testing.assert_close(scores, total / count, rtol=1e-5, atol=0)


def test_flip_averages_the_mirrored_logits_before_exp():
    model = Pointwise(ramp=2.0).eval()
    image = random_image(30, 40)
    with torch.no_grad():
        plain = model(official_normalize(image))[0]
        mirrored = model(official_normalize(image.flip(-1)))[0].flip(-1)
    scores = SegEstimator(model, flip=True).scores(image)
    torch.testing.assert_close(scores, ((plain + mirrored) / 2).exp(), rtol=1e-5, atol=0)
    assert not torch.allclose(plain, mirrored)


def test_scales_resize_the_normalized_image_and_sum_the_scores():
    model = Pointwise().eval()
    image = random_image(40, 60)
    x = official_normalize(image)
    expected = torch.zeros(4, 40, 60)
    with torch.no_grad():
        for scale in (0.5, 1.0, 1.5):
            long_side = int(60 * scale + 0.5)  # BaseDataset.image_resize: the long side, then the short one
            size = (int(40 * long_side / 60 + 0.5), long_side)
            resized = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            scores = model(resized).exp()
            expected += F.interpolate(scores, size=(40, 60), mode="bilinear", align_corners=False)[0]
    found = SegEstimator(model, scales=(0.5, 1.0, 1.5)).scores(image)
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=0)


def test_batched_stream_equals_one_image_at_a_time():
    model = Pointwise(ramp=2.0).eval()  # crop-position dependent: a crop routed wrongly shows
    sizes = [(40, 60), (40, 60), (30, 40)]
    images = [random_image(*s) for s in sizes]
    options = {"crop_size": (32, 48), "scales": (0.75, 1.0), "flip": True}
    batch_sizes = []
    model.register_forward_hook(lambda m, args, out: batch_sizes.append(args[0].shape[0]))
    streamed = dict(SegEstimator(model, max_batch=3, **options).scores_stream(enumerate(images)))
    assert max(batch_sizes) == 3  # crops of the two same-sized images shared calls
    single = SegEstimator(model, max_batch=1, **options)
    for k, image in enumerate(images):
        torch.testing.assert_close(streamed[k], single.scores(image), rtol=1e-4, atol=0)


def test_an_optimized_model_gives_the_same_labels():
    model = HRNet("w18_small_v1", head="seg", num_classes=6).eval()
    image = random_image(40, 60)
    plain = SegEstimator(model, crop_size=(32, 48)).scores(image)
    fast = SegEstimator(optimize(model), crop_size=(32, 48)).scores(image)
    torch.testing.assert_close(fast, plain, rtol=1e-3, atol=0)
    assert torch.equal(fast.argmax(0), plain.argmax(0))


def test_auto_batch_follows_free_memory(monkeypatch):
    model = HRNet("w18_small_v1", head="seg").eval()
    estimator = SegEstimator(model, crop_size=(512, 1024))
    per_crop = memory.crop_bytes(256 * 512, sum(model.widths), 19, torch.float32)
    per_image = memory.image_bytes(256 * 512, 256 * 512, 19)
    monkeypatch.setattr(memory, "free_bytes", lambda device: 5 * (per_crop + per_image))
    assert estimator.batch_size(256, 512) == 2  # half the free memory holds two crops in flight
    monkeypatch.setattr(memory, "free_bytes", lambda device: 2**40)
    assert estimator.batch_size(256, 512) == memory.MAX_AUTO_BATCH
    assert estimator.batch_size(1024, 2048) == memory.PIXELS_PER_CALL // (512 * 1024)  # 8 crops of the window
    monkeypatch.setattr(memory, "free_bytes", lambda device: 1)
    assert estimator.batch_size(256, 512) == 1


def test_bad_input_is_refused():
    model = HRNet("w18_small_v1", head="seg")
    with pytest.raises(ValueError, match="train mode"):
        SegEstimator(model)
    estimator = SegEstimator(model.eval())
    with pytest.raises(ValueError, match="uint8 RGB"):
        estimator.scores(torch.rand(3, 20, 20))
    with pytest.raises(ValueError, match="scales"):
        SegEstimator(model, scales=(0.0,))

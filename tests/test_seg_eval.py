"""seg-eval and seg-predict end to end on a synthetic Cityscapes set, and the pieces they rest on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from seg_synthetic import BLOCK, INTERIOR, carrier_model, expected_labels, write_cityscapes

from hrnet_fast import HRNet
from hrnet_fast.cli import main
from hrnet_fast.seg.cityscapes import (
    CLASS_NAMES,
    PALETTE,
    label_ids_to_train_ids,
    train_ids_to_label_ids,
)
from hrnet_fast.seg.draw import bit_spread_palette, default_palette, label_image, overlay
from hrnet_fast.seg.metrics import ConfusionMatrix

# HRNet-Semantic-Segmentation lib/datasets/cityscapes.py, label_mapping (ignore_label = 255).
OFFICIAL_MAPPING = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12}
OFFICIAL_MAPPING |= {26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def test_label_ids_map_to_train_ids_as_officially():
    ids = torch.arange(256, dtype=torch.uint8)
    train = label_ids_to_train_ids(ids)
    assert train.tolist() == [OFFICIAL_MAPPING.get(i, 255) for i in range(256)]
    assert train_ids_to_label_ids(torch.arange(19)).tolist() == sorted(OFFICIAL_MAPPING)


def test_palettes():
    assert default_palette(19) == list(PALETTE) and PALETTE[0] == (128, 64, 128) and PALETTE[13] == (0, 0, 142)
    first = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128)]
    assert bit_spread_palette(9) == [*first, (128, 128, 128), (64, 0, 0)]  # PASCAL VOC's colours
    assert default_palette(21)[:9] == bit_spread_palette(9)


def test_label_png_keeps_the_ids_and_overlay_blends(tmp_path):
    labels = torch.randint(0, 19, (20, 30))
    labels[0, 0] = 255  # ignored: no colour
    label_image(labels, PALETTE).save(tmp_path / "l.png")
    back = Image.open(tmp_path / "l.png")
    assert back.mode == "P" and np.array_equal(np.array(back), labels.numpy())
    image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    blend = np.array(overlay(image, labels, PALETTE, alpha=0.5)).astype(float)
    colour = np.array(PALETTE)[labels.clamp(max=18).numpy()]
    expected = 0.5 * image.permute(1, 2, 0).numpy() + 0.5 * colour
    expected[0, 0] = image[:, 0, 0].numpy()
    assert np.abs(blend - expected).max() <= 0.5


def test_confusion_matrix_gives_the_official_statistics():
    k = 7
    target = torch.randint(0, k - 1, (2, 40, 50))
    target[target == 3] = 255  # class 3 only predicted, never in the ground truth
    prediction = torch.where(torch.rand(2, 40, 50) < 0.6, target, torch.randint(0, k, (2, 40, 50))).clamp(max=k - 2)
    confusion = ConfusionMatrix(k)
    for p, t in zip(prediction, target, strict=True):
        confusion.update(p, t)
    # lib/utils/utils.py get_confusion_matrix and lib/core/function.py testval, restated in numpy
    keep = target.numpy() != 255
    counts = np.bincount(target.numpy()[keep] * k + prediction.numpy()[keep], minlength=k * k).reshape(k, k)
    pos, res, tp = counts.sum(1), counts.sum(0), np.diag(counts)
    iou = tp / np.maximum(1.0, pos + res - tp)
    stats = confusion.stats()
    assert np.array_equal(confusion.counts.numpy(), counts)
    np.testing.assert_allclose(stats.iou, iou)
    assert stats.miou == pytest.approx(iou.mean())
    assert stats.pixel_accuracy == pytest.approx(tp.sum() / pos.sum())
    assert stats.mean_accuracy == pytest.approx((tp / np.maximum(1.0, pos)).mean())
    assert stats.absent == [False] * (k - 1) + [True]  # class 6: no ground truth, never predicted
    with pytest.raises(ValueError, match="outside 0-6"):
        confusion.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 9))


@pytest.fixture(scope="module")
def carrier_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "carrier.pth"
    torch.save(carrier_model().state_dict(), path)
    return path


def run_eval(data, checkpoint, tmp_path, *extra, labels=None):
    stats = tmp_path / "stats.json"
    code = main(
        [
            "seg-eval",
            "--checkpoint",
            str(checkpoint),
            "--images",
            str(data.images),
            "--labels",
            str(labels or data.labels),
            "--device",
            "cpu",
            "--stats",
            str(stats),
            "--no-progress",
            *extra,
        ]
    )
    return code, (json.loads(stats.read_text()) if code == 0 else None)


@pytest.mark.parametrize(
    "options",
    [[], ["--scales", "0.5,1.0", "1.5", "--flip", "--crop", "64x96", "--max-batch", "3", "--optimize"]],
    ids=["single-scale", "multi-scale-flip-sliding-optimize"],
)
def test_seg_eval_gives_miou_one_when_predictions_equal_labels(tmp_path, carrier_checkpoint, options, capsys):
    data = write_cityscapes(tmp_path / "cityscapes")
    code, stats = run_eval(data, carrier_checkpoint, tmp_path, *options)
    assert code == 0, capsys.readouterr().err
    assert stats["mIoU"] == 1.0 and stats["pixel_accuracy"] == 1.0 and stats["mean_accuracy"] == 1.0
    assert stats["images"] == 3 and stats["flip"] == ("--flip" in options)
    squares = np.bincount(np.concatenate([c.ravel() for c in data.classes]), minlength=19)
    found = [stats["classes"][name]["ground_truth_pixels"] for name in CLASS_NAMES]
    assert found == (squares * INTERIOR).tolist()
    out = capsys.readouterr().out
    assert "mIoU" in out and "100.00" in out and "road" in out


def test_seg_eval_with_permuted_labels_gives_the_hand_computed_miou(tmp_path, carrier_checkpoint):
    swap = {0: 1, 1: 0, 2: 3, 3: 4, 4: 2}  # every square of classes 0-4 is labelled as another class
    relabel = {0: swap | {5: 6}, 1: swap, 2: swap}  # and image 0's one class-5 square as class 6
    data = write_cityscapes(tmp_path / "cityscapes", relabel=relabel)
    code, stats = run_eval(data, carrier_checkpoint, tmp_path)
    assert code == 0
    # 45 squares of 256 evaluated pixels: classes 0-6 have 3 squares, 7-18 have 2.
    # Classes 0-4: no pixel right, IoU 0. Class 5: 3 squares predicted, 2 labelled: IoU 2/3.
    # Class 6: 3 squares predicted, 4 labelled: IoU 3/4. The other 12 classes: IoU 1.
    iou = {name: stats["classes"][name]["IoU"] for name in CLASS_NAMES}
    assert [iou[n] for n in CLASS_NAMES[:5]] == [0.0] * 5
    assert iou["pole"] == pytest.approx(2 / 3) and iou["traffic light"] == pytest.approx(3 / 4)
    assert stats["mIoU"] == pytest.approx((12 + 2 / 3 + 3 / 4) / 19)
    assert stats["pixel_accuracy"] == pytest.approx(29 / 45)  # 15 + 1 of 45 squares wrong
    assert stats["mean_accuracy"] == pytest.approx((12 + 2 / 2 + 3 / 4) / 19)


def test_seg_eval_skips_unreadable_files_and_refuses_misfit_labels(tmp_path, carrier_checkpoint, capsys):
    data = write_cityscapes(tmp_path / "cityscapes")
    (data.labels / "synthtown" / f"{data.names[1]}_gtFine_labelIds.png").unlink()
    (data.images / "synthtown" / f"{data.names[2]}_leftImg8bit.png").write_bytes(b"not a png")
    code, stats = run_eval(data, carrier_checkpoint, tmp_path)
    err = capsys.readouterr().err
    assert code == 0 and stats["images"] == 1 and len(stats["skipped"]) == 2
    assert "label map not found" in err and "could not decode image" in err
    assert stats["mIoU"] == pytest.approx(15 / 19)  # image 0 shows 15 of the 19 classes, all right

    label = data.labels / "synthtown" / f"{data.names[0]}_gtFine_labelIds.png"
    Image.fromarray(np.zeros((3 * BLOCK, 5 * BLOCK - 1), dtype=np.uint8)).save(label)
    code, _ = run_eval(data, carrier_checkpoint, tmp_path)
    assert code == 2 and f"label map {label} is 96x159 but its image" in capsys.readouterr().err


def test_seg_eval_refuses_a_class_count_the_labels_cannot_have(tmp_path, capsys):
    data = write_cityscapes(tmp_path / "cityscapes")
    five = tmp_path / "five.pth"
    torch.save(carrier_model(num_classes=5).state_dict(), five)
    code, _ = run_eval(data, five, tmp_path)
    assert code == 2 and "predicts 5 classes" in capsys.readouterr().err
    code, _ = run_eval(data, five, tmp_path, "--label-kind", "trainids")  # no *_gtFine_labelTrainIds.png yet
    assert code == 2 and "none of the 3 images could be read" in capsys.readouterr().err
    for f in (data.labels / "synthtown").iterdir():  # label maps of train ids, with classes up to 18
        ids = label_ids_to_train_ids(torch.from_numpy(np.array(Image.open(f))))
        Image.fromarray(ids.numpy()).save(str(f).replace("_labelIds", "_labelTrainIds"))
    code, _ = run_eval(data, five, tmp_path, "--label-kind", "trainids")
    assert code == 2 and "holds class 5, but the model predicts 5 classes" in capsys.readouterr().err


def test_seg_eval_reports_bad_files_in_one_line(tmp_path, carrier_checkpoint, capsys):
    data = write_cityscapes(tmp_path / "cityscapes")
    pose = tmp_path / "pose.pth"
    torch.save(HRNet("w18_small_v1", head="pose").state_dict(), pose)
    for checkpoint, message in [(tmp_path / "missing.pth", "checkpoint file not found"), (pose, "no seg head")]:
        code, _ = run_eval(data, checkpoint, tmp_path)
        assert code == 2 and message in capsys.readouterr().err
    code, _ = run_eval(data, carrier_checkpoint, tmp_path, labels=tmp_path / "nowhere")
    assert code == 2 and "labels folder not found" in capsys.readouterr().err


def test_seg_predict_writes_train_ids_and_an_overlay(tmp_path, carrier_checkpoint, capsys):
    data = write_cityscapes(tmp_path / "cityscapes")
    image = data.images / "synthtown" / f"{data.names[0]}_leftImg8bit.png"
    out = tmp_path / "labels.png"
    code = main(
        ["seg-predict", str(image), "--checkpoint", str(carrier_checkpoint), "--device", "cpu", "--out", str(out)]
    )
    assert code == 0
    expected = expected_labels(data.classes[0]).numpy()
    found = np.array(Image.open(out))
    evaluated = expected != 255
    assert np.array_equal(found[evaluated], expected[evaluated])
    drawing = Image.open(tmp_path / "labels_overlay.png")
    assert drawing.mode == "RGB" and drawing.size == (5 * BLOCK, 3 * BLOCK)
    assert "of the pixels" in capsys.readouterr().out

    ids_out = tmp_path / "ids.png"
    args = ["seg-predict", str(image), "--checkpoint", str(carrier_checkpoint), "--device", "cpu"]
    assert main([*args, "--out", str(ids_out), "--label-ids"]) == 0
    ids = np.array(Image.open(ids_out))
    assert np.array_equal(ids[evaluated], train_ids_to_label_ids(torch.from_numpy(expected[evaluated])).numpy())

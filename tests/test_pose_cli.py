"""hrnet-fast pose-eval / pose-predict end to end on a synthetic COCO dataset with a tiny random model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from pose_synthetic import make_dataset

from hrnet_fast import HRNet
from hrnet_fast.cli import main
from hrnet_fast.pose import STAT_NAMES, pipeline
from hrnet_fast.pose import cli as pose_cli

FAST = ["--size", "32x24", "--batch", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = HRNet("w18_small_v1", head="pose")
    path = tmp_path_factory.mktemp("ckpt") / "pose_w18_small_v1.pth"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("coco"))


def _eval_args(dataset, checkpoint):
    return [
        "pose-eval",
        "--checkpoint",
        checkpoint,
        "--ann",
        str(dataset.ann),
        "--images",
        str(dataset.images),
    ]


def test_pose_eval_writes_results_and_the_ten_stats(dataset, checkpoint, tmp_path, capsys):
    out, stats_path = tmp_path / "results.json", tmp_path / "stats.json"
    args = [*_eval_args(dataset, checkpoint), "--boxes", str(dataset.boxes), *FAST, "--dark"]
    assert main([*args, "--out", str(out), "--stats", str(stats_path), "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert "HRNet-w18_small_v1 pose, input 32x24" in captured.err and "4 images, " in captured.err
    assert "\r" not in captured.err  # tqdm draws no bar when stderr is not a terminal
    assert "COCO keypoint evaluation (pycocotools)" in captured.out and "AP (M)" in captured.out
    assert "index created" not in captured.out + captured.err  # pycocotools kept quiet
    stats = json.loads(stats_path.read_text())
    assert list(stats) == list(STAT_NAMES)
    assert all(-1.0 <= v <= 1.0 for v in stats.values())
    results = json.loads(out.read_text())
    detections = json.loads(dataset.boxes.read_text())
    persons = [d for d in detections if d["category_id"] == 1]
    assert 0 < len(results) <= len(persons)
    assert set(results[0]) == {"image_id", "category_id", "keypoints", "score", "center", "scale"}
    assert len(results[0]["keypoints"]) == 51 and results[0]["category_id"] == 1


def test_pose_eval_with_ground_truth_boxes_and_no_flip(dataset, checkpoint, tmp_path, capsys):
    stats_path = tmp_path / "stats.json"
    args = [*_eval_args(dataset, checkpoint), *FAST, "--no-flip", "--no-progress", "--stats", str(stats_path)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "ground-truth boxes" in captured.err and "no flip test" in captured.err
    assert "images (" not in captured.err  # no progress bar
    assert len(json.loads(stats_path.read_text())) == 10


def test_pose_eval_reports_and_skips_images_it_cannot_read(tmp_path, checkpoint, capsys):
    data = make_dataset(tmp_path)
    (data.images / data.data["images"][0]["file_name"]).write_bytes(b"\x89PNG broken")
    assert main([*_eval_args(data, checkpoint), *FAST, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning: skipped image 1: could not decode" in captured.err
    assert "on the 3 readable images" in captured.out


def test_pose_predict_draws_the_skeletons_into_a_png(dataset, checkpoint, tmp_path, capsys):
    image_path = dataset.images / dataset.data["images"][2]["file_name"]
    out = tmp_path / "drawn.png"
    common = [str(image_path), "--checkpoint", checkpoint, *FAST, "--threshold=-1000"]
    assert main(["pose-predict", *common, "--boxes", str(dataset.boxes), "--out", str(out)]) == 0
    people = sum(d["image_id"] == 3 and d["category_id"] == 1 for d in json.loads(dataset.boxes.read_text()))
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("person ")]
    assert 1 <= len(printed) <= people
    original = np.asarray(Image.open(image_path).convert("RGB"))
    drawn = np.asarray(Image.open(out))
    assert Image.open(out).format == "PNG" and drawn.shape == original.shape
    assert (drawn != original).any(axis=2).sum() > 100

    whole = tmp_path / "whole.png"
    assert main(["pose-predict", *common, "--out", str(whole)]) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("person ")]) == 1


@pytest.fixture
def broken(tmp_path, dataset):
    """Files that the commands must refuse, each with its own message."""
    annotations = json.loads(dataset.ann.read_text())
    paths = {}
    for name, content in {
        "no_images.json": annotations | {"images": []},
        "instances.json": annotations | {"categories": [{"id": 1, "name": "person"}]},
        "outside.json": [{"image_id": 1, "category_id": 1, "bbox": [400.0, 10.0, 30.0, 30.0], "score": 0.9}],
    }.items():
        paths[name] = tmp_path / name
        paths[name].write_text(json.dumps(content))
    for name, model in {
        "w18_small_v2.pth": HRNet("w18_small_v2", head="pose"),
        "mpii.pth": HRNet("w18_small_v1", head="pose", num_joints=16),
    }.items():
        paths[name] = tmp_path / name
        torch.save(model.state_dict(), paths[name])
    return paths


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--checkpoint": "missing.pth"}, "checkpoint file not found"),
        ({"--ann": "missing.json"}, "annotation file not found"),
        ({"--images": "missing_dir"}, "images folder not found"),
        ({"--boxes": "missing.json"}, "boxes file not found"),
        ({"--ann": "no_images.json"}, "lists no images"),
        ({"--ann": "instances.json"}, "no person category"),
        (
            {"--boxes": "outside.json"},
            r"image 1 \(000000000001.png\): box \[400.0, 10.0, 30.0, 30.0\] .* outside",
        ),
        ({"--checkpoint": "w18_small_v2.pth", "--arch": "w18_small_v1"}, "looks like arch 'w18_small_v2'"),
        ({"--checkpoint": "mpii.pth"}, "predicts 16 joints"),
    ],
)
def test_pose_eval_refuses_bad_input_with_one_clear_line(
    dataset, checkpoint, broken, tmp_path, change, message, capsys
):
    options = {"--checkpoint": checkpoint, "--ann": str(dataset.ann), "--images": str(dataset.images)}
    for key, value in change.items():
        options[key] = value if key == "--arch" else str(broken.get(value, tmp_path / value))
    args = ["pose-eval", *[a for kv in options.items() for a in kv], *FAST, "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "hrnet-fast pose-eval: error:" in err and "Traceback" not in err
    assert re.search(message, err), err


def test_pose_predict_refuses_an_unreadable_image_and_boxes_it_cannot_match(dataset, checkpoint, tmp_path, capsys):
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"no")
    assert main(["pose-predict", str(bad), "--checkpoint", checkpoint, "--out", str(tmp_path / "o.png")]) == 2
    assert "could not decode image" in capsys.readouterr().err
    good = tmp_path / "photo.png"
    Image.new("RGB", (50, 40)).save(good)
    args = ["pose-predict", str(good), "--checkpoint", checkpoint, "--boxes", str(dataset.boxes), *FAST]
    assert main([*args, "--out", str(tmp_path / "o.png")]) == 2
    assert "say which is" in capsys.readouterr().err
    assert main([*args, "--image-id", "77", "--out", str(tmp_path / "o.png")]) == 2
    assert "no person boxes for image id 77" in capsys.readouterr().err
    assert main([*args, "--out", str(good)]) == 2
    assert "is the input image" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "no" / "o.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["pose-predict", str(good), "--checkpoint", checkpoint, "--device", "gpu7"])
    assert exit_.value.code == 2
    assert "'gpu7' is not a device" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_pose_predict_writes_beside_the_image_by_default(dataset, checkpoint, tmp_path, capsys):
    image = tmp_path / "street.png"
    image.write_bytes((dataset.images / dataset.data["images"][2]["file_name"]).read_bytes())
    assert main(["pose-predict", str(image), "--checkpoint", checkpoint, *FAST, "--threshold=-1000"]) == 0
    drawn = tmp_path / "street_pose.png"
    assert f"wrote {drawn}" in capsys.readouterr().out
    assert Image.open(drawn).format == "PNG"
    assert (np.asarray(Image.open(drawn)) != np.asarray(Image.open(image).convert("RGB"))).any()


def _keypoints(x: float, y: float, score: float) -> torch.Tensor:
    return torch.tensor([[[x, y, score]] * 17])


@pytest.mark.parametrize(
    ("keypoints", "message"),
    [
        (_keypoints(10.0, 10.0, 0.9), None),
        (_keypoints(10.0, 10.0, 0.1), "no joint scores above --threshold 0.3 (the best scores 0.100)"),
        (_keypoints(-5.0, 10.0, 0.9), "all 17 joints scoring above --threshold 0.3 lie outside the 50x40 image"),
        (_keypoints(10.0, 40.0, 0.9), "lie outside the 50x40 image"),  # y = height is past the last row
        (torch.empty(0, 17, 3), "no joint scores above --threshold 0.3"),
    ],
)
def test_nothing_to_draw_names_the_reason(keypoints, message):
    why = pose_cli._nothing_to_draw(keypoints, 0.3, 50, 40)
    assert why is None if message is None else message in why


def test_pose_predict_writes_no_image_when_nothing_would_show(dataset, checkpoint, tmp_path, capsys, monkeypatch):
    image = dataset.images / dataset.data["images"][2]["file_name"]
    out = tmp_path / "drawn.png"
    common = ["pose-predict", str(image), "--checkpoint", checkpoint, *FAST, "--out", str(out)]
    assert main([*common, "--threshold", "1000"]) == pose_cli.NOTHING_TO_DRAW
    assert "nothing to draw: no joint scores above --threshold 1000.0" in capsys.readouterr().err

    def off_image(poses, box_scores):  # every joint confident, all to the left of the image
        keypoints = poses.keypoints.clone()
        keypoints[..., 0], keypoints[..., 2] = -10.0, 0.9
        return poses._replace(keypoints=keypoints), box_scores

    monkeypatch.setattr(pipeline, "rescore_and_suppress", off_image)
    assert main(common) == pose_cli.NOTHING_TO_DRAW
    assert "joints scoring above --threshold 0.3 lie outside the" in capsys.readouterr().err
    assert not out.exists()

"""COCO side of the pose pipeline: annotation/detection files, results JSON, COCOeval stats, OKS-NMS."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pose_synthetic import gt_keypoints, make_dataset
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hrnet_fast.pose import (
    STAT_NAMES,
    PoseInputError,
    evaluate_keypoints,
    ground_truth_boxes,
    keypoint_results,
    load_detections,
    load_keypoint_annotations,
    oks_nms,
    rescore,
    write_results,
)
from hrnet_fast.pose.coco import format_stats
from hrnet_fast.pose.nms import oks_matrix
from hrnet_fast.pose.skeleton import OKS_SIGMAS


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def coco(dataset):
    return load_keypoint_annotations(dataset.ann)


def _results_from(dataset, transform) -> list[dict]:
    """From the ground truth: transform(image_id, keypoints (K, 17, 3)) -> (keypoints, scores)."""
    results = []
    for image in dataset.data["images"]:
        kp, scores = transform(image["id"], gt_keypoints(dataset.data, image["id"]))
        ones = torch.ones(len(kp), 2)
        results += keypoint_results(image["id"], kp, scores, ones, ones)
    return results


def test_predictions_equal_to_the_ground_truth_give_perfect_stats(dataset, coco):
    results = _results_from(dataset, lambda i, kp: (kp, torch.rand(len(kp)) + 0.1))
    stats = evaluate_keypoints(coco, results)
    assert list(stats) == list(STAT_NAMES)
    assert stats == dict.fromkeys(STAT_NAMES, 1.0)


def _direct_pycocotools(ann_path, results_path) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_path))
        evaluator = COCOeval(gt, gt.loadRes(str(results_path)), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def test_perturbed_predictions_give_exactly_the_stats_of_a_direct_pycocotools_call(dataset, coco, tmp_path):
    gen = torch.Generator().manual_seed(1)

    def perturb(image_id, kp):
        noise = torch.randn(kp.shape[0], 17, 2, generator=gen, dtype=kp.dtype) * (1 + 3 * torch.rand(kp.shape[0], 1, 1))
        out = kp.clone()
        out[..., :2] += noise
        out[..., 2] = torch.rand(kp.shape[:2], generator=gen, dtype=kp.dtype)
        if image_id == 2:  # a false positive shifted far away
            out = torch.cat((out, out[:1] + torch.tensor([40.0, 30.0, 0.0], dtype=kp.dtype)))
        return out, torch.rand(len(out), generator=gen)

    results = _results_from(dataset, perturb)
    path = tmp_path / "results.json"
    write_results(results, path)
    ours = evaluate_keypoints(coco, path)
    assert list(ours.values()) == _direct_pycocotools(dataset.ann, path)
    assert 0.05 < ours["AP"] < 0.95 and 0.05 < ours["AR"] <= 1.0  # a real, imperfect result
    assert ours == evaluate_keypoints(coco, results)


def test_evaluation_can_be_restricted_to_some_images(dataset, coco):
    results = _results_from(dataset, lambda i, kp: (kp, torch.ones(len(kp))))
    results = [r for r in results if r["image_id"] != 3]
    assert evaluate_keypoints(coco, results)["AR"] < 1.0
    assert evaluate_keypoints(coco, results, image_ids=[1, 2, 4])["AR"] == 1.0


def test_results_follow_the_official_json_format(tmp_path):
    kp = torch.arange(2 * 17 * 3, dtype=torch.float32).view(2, 17, 3)
    results = keypoint_results(7, kp, torch.tensor([0.5, 0.25]), torch.ones(2, 2) * 3, torch.ones(2, 2) * 0.5)
    write_results(results, tmp_path / "r.json")
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded[1] == {
        "image_id": 7,
        "category_id": 1,
        "keypoints": list(range(51, 102)),
        "score": 0.25,
        "center": [3.0, 3.0],
        "scale": [0.5, 0.5],
    }


def test_ground_truth_boxes_are_clipped_like_the_official_code(dataset, coco):
    boxes = ground_truth_boxes(coco)
    expected_people = {i["id"]: 0 for i in dataset.data["images"]}
    for ann in dataset.data["annotations"]:
        expected_people[ann["image_id"]] += 1
    assert {i: len(b) for i, (b, _) in boxes.items()} == expected_people
    x, y, w, h = dataset.data["annotations"][0]["bbox"]
    image = dataset.data["images"][0]
    x2 = min(image["width"] - 1, max(0, x) + max(0, w - 1))
    y2 = min(image["height"] - 1, max(0, y) + max(0, h - 1))
    torch.testing.assert_close(boxes[1][0][0], torch.tensor([x, y, x2 - x, y2 - y], dtype=torch.float32))
    assert torch.equal(boxes[1][1], torch.ones(len(boxes[1][0])))


def test_detections_keep_people_above_the_score_threshold(dataset):
    all_people = load_detections(dataset.boxes)
    assert 2 not in all_people or len(all_people[2][0]) == sum(
        a["image_id"] == 2 for a in dataset.data["annotations"]
    )  # the category-3 detection on image 2 is not a person
    confident = load_detections(dataset.boxes, min_score=0.3)
    assert len(all_people[1][0]) == len(confident[1][0]) + 1
    assert all_people[1][1].min() == pytest.approx(0.2)


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_annotation_files_that_cannot_be_evaluated_are_refused_clearly(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        load_keypoint_annotations(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PoseInputError, match="not valid JSON"):
        load_keypoint_annotations(tmp_path / "bad.json")
    no_images = dataset.data | {"images": []}
    with pytest.raises(PoseInputError, match="lists no images"):
        load_keypoint_annotations(_write(tmp_path / "empty.json", no_images))
    instances = dataset.data | {"categories": [{"id": 1, "name": "person"}]}
    with pytest.raises(PoseInputError, match="instances_"):
        load_keypoint_annotations(_write(tmp_path / "instances.json", instances))
    stripped = [{k: v for k, v in a.items() if k != "keypoints"} for a in dataset.data["annotations"]]
    with pytest.raises(PoseInputError, match="annotation 1 has no keypoints"):
        load_keypoint_annotations(_write(tmp_path / "nokp.json", dataset.data | {"annotations": stripped}))


def test_detection_files_that_cannot_be_used_are_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="boxes file not found"):
        load_detections(tmp_path / "nope.json")
    with pytest.raises(PoseInputError, match="JSON list"):
        load_detections(_write(tmp_path / "d.json", {"image_id": 1}))
    with pytest.raises(PoseInputError, match="detection 0 has no score"):
        load_detections(_write(tmp_path / "d.json", [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]))


def test_evaluating_no_results_is_an_error(coco):
    with pytest.raises(PoseInputError, match="no keypoint results"):
        evaluate_keypoints(coco, [])


def _official_oks_nms(kpts, scores, areas, thresh):
    """The official greedy loop (deep-high-resolution-net lib/nms/nms.py), restated with numpy."""
    sigmas = np.array(OKS_SIGMAS)
    variances = (sigmas * 2) ** 2
    order = scores.argsort(kind="stable")[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        d2 = ((kpts[rest, :, :2] - kpts[i, :, :2]) ** 2).sum(-1)
        e = d2 / variances / ((areas[i] + areas[rest])[:, None] / 2 + np.spacing(1)) / 2
        oks = np.exp(-e).mean(-1)
        order = rest[oks <= thresh]
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oks_nms_keeps_what_the_official_greedy_loop_keeps(seed):
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(6, 17, 3, generator=gen, dtype=torch.float64) * 100
    near = base.repeat(3, 1, 1)
    near[..., :2] += torch.randn(18, 17, 2, generator=gen, dtype=torch.float64) * torch.linspace(0.02, 1.0, 18).view(
        18, 1, 1
    )
    scores = torch.rand(18, generator=gen, dtype=torch.float64)
    areas = torch.rand(18, generator=gen, dtype=torch.float64) * 3000 + 500
    keep = oks_nms(near, scores, areas, threshold=0.9)
    expected = _official_oks_nms(near.numpy(), scores.numpy(), areas.numpy(), 0.9)
    assert keep.tolist() == expected
    assert 6 <= len(expected) < 18  # some near-duplicates go, the distinct people stay


def test_oks_matrix_is_symmetric_and_one_on_the_diagonal():
    kp = torch.rand(5, 17, 2, dtype=torch.float64) * 50
    oks = oks_matrix(kp, torch.rand(5, dtype=torch.float64) * 1000 + 100)
    torch.testing.assert_close(oks, oks.T)
    torch.testing.assert_close(oks.diagonal(), torch.ones(5, dtype=torch.float64))
    assert (oks < 1).sum() == 20


def test_rescoring_multiplies_the_box_score_by_the_mean_confident_joint_score():
    kp = torch.zeros(2, 17, 3)
    kp[0, :4, 2] = torch.tensor([0.9, 0.5, 0.1, 0.2])  # 0.1 and 0.2 are not above 0.2
    torch.testing.assert_close(rescore(kp, torch.tensor([0.5, 0.8])), torch.tensor([0.35, 0.0]))


def test_stats_print_as_a_table():
    text = format_stats(dict(zip(STAT_NAMES, np.linspace(0, 0.9, 10), strict=True)))
    names, values = text.splitlines()
    assert names.split(" | ")[0].strip() == "AP" and values.split(" | ")[-1].strip() == "0.900"

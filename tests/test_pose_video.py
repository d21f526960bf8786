"""pose-predict on videos and image folders: frames streamed through detector, estimator and writers."""

from __future__ import annotations

import json
import sys
import types

import av
import numpy as np
import pytest
import torch
from PIL import Image

from hrnet_fast import HRNet
from hrnet_fast.cli import main
from hrnet_fast.pose import PoseEstimator, PoseInputError, load_pose_model, rescore_and_suppress
from hrnet_fast.pose.detect import DetectionsFile, TorchvisionDetector, WholeFrame, torchvision_detector
from hrnet_fast.pose.video import estimate_frames
from hrnet_fast.pose.video_cli import default_outputs
from hrnet_fast.pose.video_io import FolderFrames, Frame, VideoFrames

SIZE = (64, 48)  # small model input: fast enough for a few frames on two cores
FRAMES = 5


def synthetic_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """Noise with a bright square moving right: (H, W, 3) uint8 RGB frames."""
    rng = np.random.default_rng(3)
    frames = []
    for k in range(count):
        frame = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
        frame[20:60, 10 + 8 * k : 40 + 8 * k] = 230
        frames.append(frame)
    return frames


def write_video(path, frames: list[np.ndarray], fps: int = 10) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))


def boxes_of(index: int) -> list[list[float]]:
    """Two people per frame: one around the square, one fixed."""
    return [[8.0 + 8 * index, 16.0, 36.0, 48.0], [60.0, 10.0, 30.0, 70.0]]


def write_detections(path, image_ids: list[int]) -> None:
    detections = [
        {"image_id": i, "category_id": 1, "bbox": box, "score": 0.9 - 0.1 * b}
        for k, i in enumerate(image_ids)
        for b, box in enumerate(boxes_of(k))
    ]
    path.write_text(json.dumps(detections))


@pytest.fixture(scope="module")
def pose_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("pose") / "pose_w18_small.pth"
    torch.save(HRNet("w18_small_v1", head="pose").state_dict(), path)
    return path


def expected_records(checkpoint, frames: list[Frame]) -> list[list[dict]]:
    """Each frame's people from the one-image pipeline, on the same decoded frames and boxes."""
    estimator = PoseEstimator(load_pose_model(checkpoint), SIZE, flip=False)
    out = []
    for k, frame in enumerate(frames):
        boxes = torch.tensor(boxes_of(k))
        poses, scores = rescore_and_suppress(estimator.estimate(frame.image, boxes), torch.tensor([0.9, 0.8]))
        out.append(
            [{"score": s, "keypoints": kp} for s, kp in zip(scores.tolist(), poses.keypoints.tolist(), strict=True)]
        )
    return out


def read_lines(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def assert_records_match(lines: list[dict], expected: list[list[dict]]) -> None:
    assert [r["frame"] for r in lines] == list(range(len(expected)))
    for record, people in zip(lines, expected, strict=True):
        assert len(record["people"]) == len(people) > 0
        for found, want in zip(record["people"], people, strict=True):
            assert found["score"] == pytest.approx(want["score"], abs=1e-4)
            np.testing.assert_allclose(found["keypoints"], want["keypoints"], atol=2e-3)


def predict_args(checkpoint, source) -> list[str]:
    return ["pose-predict", str(source), "--checkpoint", str(checkpoint), "--device", "cpu", "--size", "64x48"]


def test_video_round_trip(tmp_path, pose_checkpoint, capsys):
    clip = tmp_path / "clip.mp4"
    write_video(clip, synthetic_frames(FRAMES, 96, 128))
    write_detections(tmp_path / "det.json", list(range(FRAMES)))
    args = predict_args(pose_checkpoint, clip)
    code = main([*args, "--no-flip", "--batch", "3", "--boxes", str(tmp_path / "det.json"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    out, keypoints = default_outputs(str(clip), None, None)
    assert out == str(tmp_path / "clip_pose.mp4") and keypoints == str(tmp_path / "clip_pose.jsonl")
    with av.open(out) as container:
        drawn = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(drawn) == FRAMES and drawn[0].shape == (96, 128, 3)
    lines = read_lines(keypoints)
    decoded = list(VideoFrames(clip))
    assert_records_match(lines, expected_records(pose_checkpoint, decoded))
    assert lines[1]["time"] == pytest.approx(0.1)
    assert "wrote" in capsys.readouterr().out


def test_folder_round_trip_with_boxes_by_file_name(tmp_path, pose_checkpoint):
    folder = tmp_path / "frames"
    folder.mkdir()
    names = [f"{100 + k:06d}.png" for k in range(3)]
    for name, rgb in zip(names, synthetic_frames(3, 75, 101), strict=True):  # odd sizes
        Image.fromarray(rgb).save(folder / name)
    write_detections(tmp_path / "det.json", [100, 101, 102])
    video = tmp_path / "drawn.mp4"
    args = [*predict_args(pose_checkpoint, folder), "--no-flip", "--boxes", str(tmp_path / "det.json")]
    assert main([*args, "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "frames_pose").iterdir()) == [*names, "keypoints.jsonl"]
    assert Image.open(tmp_path / "frames_pose" / names[0]).size == (101, 75)
    lines = read_lines(tmp_path / "frames_pose" / "keypoints.jsonl")
    assert_records_match(lines, expected_records(pose_checkpoint, list(FolderFrames(folder))))
    assert main([*args, "--out", str(video), "--fps", "5", "--no-progress"]) == 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == 5 and (stream.height, stream.width) == (76, 102)  # padded to even
        assert sum(1 for _ in container.decode(stream)) == 3


def test_frames_are_streamed_and_any_callable_detects(tmp_path, pose_checkpoint):
    estimator = PoseEstimator(load_pose_model(pose_checkpoint), SIZE, flip=False, batch_size=2)
    pulled = []

    def frames():
        for k, rgb in enumerate(synthetic_frames(6, 96, 128)):
            pulled.append(k)
            yield Frame(k, k / 10, f"f{k}", torch.from_numpy(rgb).permute(2, 0, 1))

    def detector(frame):  # one person around the moving square
        return torch.tensor([boxes_of(frame.index)[0]]), torch.ones(1)

    found = estimate_frames(estimator, frames(), detector)
    first = next(found)
    assert first.frame.index == 0 and len(pulled) <= 3  # two crops per model batch: frames wait, not the video
    rest = list(found)
    assert [f.frame.index for f in rest] == [1, 2, 3, 4, 5] and len(pulled) == 6
    single = estimator.estimate(rest[2].frame.image, torch.tensor([boxes_of(3)[0]]))
    torch.testing.assert_close(rest[2].poses.keypoints, single.keypoints, atol=2e-3, rtol=0)
    assert rest[2].drawing().shape == (96, 128, 3)


def test_detections_file_and_whole_frame(tmp_path):
    write_detections(tmp_path / "det.json", [7, 8])
    image = torch.zeros(3, 40, 50, dtype=torch.uint8)
    by_index = DetectionsFile(tmp_path / "det.json")
    boxes, scores = by_index(Frame(8, 0.0, "x.png", image))
    assert boxes.tolist() == boxes_of(1) and scores.tolist() == pytest.approx([0.9, 0.8])
    assert len(by_index(Frame(0, 0.0, "x.png", image))[0]) == 0
    by_name = DetectionsFile(tmp_path / "det.json", min_score=0.85, by_name=True)
    assert by_name(Frame(0, 0.0, "000007.png", image))[0].tolist() == [boxes_of(0)[0]]
    boxes, scores = WholeFrame()(Frame(0, 0.0, "", image))
    assert boxes.tolist() == [[0, 0, 50, 40]] and scores.tolist() == [1]


class FakeDetectionModel(torch.nn.Module):
    """torchvision's detection output format: one dict per image, boxes as x1, y1, x2, y2."""

    def __init__(self, num_classes: int = 91):
        super().__init__()
        self.head = torch.nn.Linear(1, num_classes)
        self.seen = []

    def forward(self, images):
        self.seen.append((len(images), images[0].dtype, float(images[0].max())))
        boxes = torch.tensor([[10.0, 20.0, 40.0, 80.0], [0.0, 0.0, 5.0, 5.0], [3.0, 4.0, 3.0, 9.0], [1, 2, 30, 40]])
        return [{"boxes": boxes, "labels": torch.tensor([1, 3, 1, 1]), "scores": torch.tensor([0.95, 0.99, 0.97, 0.5])}]


def test_torchvision_detector_keeps_confident_people():
    model = FakeDetectionModel()
    detector = TorchvisionDetector(model, person_label=1, threshold=0.9)
    image = torch.full((3, 90, 60), 255, dtype=torch.uint8)
    boxes, scores = detector(Frame(0, 0.0, "", image))
    assert boxes.tolist() == [[10.0, 20.0, 30.0, 60.0]] and scores.tolist() == pytest.approx([0.95])
    assert model.seen == [(1, torch.float32, 1.0)]  # one image, scaled to 0..1 as torchvision expects


def fake_torchvision(monkeypatch, categories):
    built = []

    weights = types.SimpleNamespace(
        url="https://download.pytorch.org/models/fake_detector-0123.pth", meta={"categories": categories}
    )

    def get_model(name, **config):
        built.append(config)
        return FakeDetectionModel(config["num_classes"])

    models = types.SimpleNamespace(
        get_model_weights=lambda name: types.SimpleNamespace(DEFAULT=weights), get_model=get_model
    )
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))
    return built


def test_torchvision_detector_never_downloads(tmp_path, monkeypatch):
    built = fake_torchvision(monkeypatch, ["__background__", "person", "bicycle"])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(PoseInputError, match="detector weights not found at .*fake_detector-0123.pth"):
        torchvision_detector("fake")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(FakeDetectionModel(3).state_dict(), tmp_path / "hub" / "checkpoints" / "fake_detector-0123.pth")
    detector = torchvision_detector("fake", threshold=0.5)
    assert detector.person_label == 1 and detector.threshold == 0.5
    assert built == [{"weights": None, "weights_backbone": None, "num_classes": 3}]  # no pretrained download
    fake_torchvision(monkeypatch, ["__background__", "car"])
    with pytest.raises(PoseInputError, match="no 'person' category"):
        torchvision_detector("fake", weights=tmp_path / "hub" / "checkpoints" / "fake_detector-0123.pth")


def test_video_input_errors(tmp_path, pose_checkpoint, capsys, monkeypatch):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 50)
    assert main(predict_args(pose_checkpoint, broken)) == 2
    assert "could not open video" in capsys.readouterr().err
    clip = tmp_path / "clip.mp4"
    write_video(clip, synthetic_frames(2, 64, 64))
    args = predict_args(pose_checkpoint, clip)
    assert main([*args, "--detector", "--boxes", str(tmp_path / "det.json")]) == 2
    assert "either --detector or --boxes" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails, as beside a mismatched torch
    assert main([*args, "--detector"]) == 2
    assert "--detector needs torchvision" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "av", None)
    assert main(args) == 2
    assert "videos need PyAV, which is not installed: pip install" in capsys.readouterr().err

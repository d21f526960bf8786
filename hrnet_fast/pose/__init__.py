"""Top-down COCO pose estimation with HRNet: crops, flip test, decoding, OKS-NMS, COCO evaluation.

from hrnet_fast.pose import PoseEstimator, load_pose_model, read_image
estimator = PoseEstimator(load_pose_model("pose_hrnet_w32_256x192.pth"), (256, 192))
poses = estimator.estimate(read_image("people.jpg"), boxes)  # boxes (K, 4) as x, y, w, h
poses.keypoints  # (K, 17, 3): x, y, score in image pixels
"""

from .boxes import box_to_center_scale
from .coco import (
    STAT_NAMES,
    evaluate_keypoints,
    ground_truth_boxes,
    keypoint_results,
    load_detections,
    load_keypoint_annotations,
    write_results,
)
from .decode import decode_heatmaps
from .draw import draw_poses
from .errors import PoseInputError
from .flip import flip_test
from .model import load_pose_model
from .nms import oks_nms, rescore
from .pipeline import PoseEstimator, Poses, rescore_and_suppress
from .preprocess import ImageReadError, read_image
from .skeleton import FLIP_PAIRS, KEYPOINT_NAMES, OKS_SIGMAS, SKELETON

__all__ = [
    "FLIP_PAIRS",
    "KEYPOINT_NAMES",
    "OKS_SIGMAS",
    "SKELETON",
    "STAT_NAMES",
    "ImageReadError",
    "PoseEstimator",
    "PoseInputError",
    "Poses",
    "box_to_center_scale",
    "decode_heatmaps",
    "draw_poses",
    "evaluate_keypoints",
    "flip_test",
    "ground_truth_boxes",
    "keypoint_results",
    "load_detections",
    "load_keypoint_annotations",
    "load_pose_model",
    "oks_nms",
    "read_image",
    "rescore",
    "rescore_and_suppress",
    "write_results",
]

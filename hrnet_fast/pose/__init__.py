"""Top-down COCO pose estimation with HRNet: crops, flip test, decoding, OKS-NMS, COCO evaluation.

from hrnet_fast.pose import PoseEstimator, load_pose_model, read_image
estimator = PoseEstimator(load_pose_model("pose_hrnet_w32_256x192.pth"), (256, 192))
poses = estimator.estimate(read_image("people.jpg"), boxes)  # boxes (K, 4) as x, y, w, h
poses.keypoints  # (K, 17, 3): x, y, score in image pixels

Every name here is imported on first use (:mod:`hrnet_fast._lazy`): the command line's parser
imports this package without loading torch.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "box_to_center_scale": ".boxes",
    "STAT_NAMES": ".coco",
    "evaluate_keypoints": ".coco",
    "ground_truth_boxes": ".coco",
    "keypoint_results": ".coco",
    "load_detections": ".coco",
    "load_keypoint_annotations": ".coco",
    "write_results": ".coco",
    "decode_heatmaps": ".decode",
    "draw_poses": ".draw",
    "PoseInputError": ".errors",
    "flip_test": ".flip",
    "load_pose_model": ".model",
    "oks_nms": ".nms",
    "rescore": ".nms",
    "PoseEstimator": ".pipeline",
    "Poses": ".pipeline",
    "rescore_and_suppress": ".pipeline",
    "ImageReadError": ".preprocess",
    "read_image": ".preprocess",
    "FLIP_PAIRS": ".skeleton",
    "KEYPOINT_NAMES": ".skeleton",
    "OKS_SIGMAS": ".skeleton",
    "SKELETON": ".skeleton",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

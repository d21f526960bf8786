"""How many crops one model call may take: an estimate of a crop's working memory against free memory.

An HRNet seg forward at inference keeps, per input pixel, about
``STEM_VALUES + 3 * sum(widths) / 16`` activation values alive at its peak (the stem's two 64-channel
maps at 1/2 resolution; then, at 1/4 resolution, the concatenated branches, the head's first conv
and its BatchNorm output), in the model's dtype, plus the upsampled float32 logits and scores
(``3 * num_classes`` values). For W48 in float32 that is 1.9 GB for a 1024x2048 crop, a little above
what was measured on a CPU: the model's forward peaked 1.25 GB above the loaded model, and a whole
``SegEstimator.predict`` process (Python, torch, weights) at 2.0-2.2 GB resident.
Each image in flight also holds float32 score maps at its size and at the current test scale.
"""

from __future__ import annotations

import os

import torch

STEM_VALUES = 32
W48_WIDTHS = 48 + 96 + 192 + 384  # assumed when the model does not say its widths
BUDGET_SHARE = 0.5  # of the free memory, for the crops and score maps in flight
PIXELS_PER_CALL = 2**22  # no more pixels than this per model call: larger batches add no speed
MAX_AUTO_BATCH = 16


def crop_bytes(pixels: int, sum_widths: int, num_classes: int, dtype: torch.dtype) -> int:
    """Working memory of one crop of ``pixels`` through the model, its logits and its scores."""
    values = STEM_VALUES + 3 * sum_widths / 16
    return int(pixels * (values * dtype.itemsize + 3 * num_classes * 4))


def image_bytes(pixels: int, scaled_pixels: int, num_classes: int) -> int:
    """Score maps of one image in flight: the final map and the current scale's sum and count."""
    return 4 * (num_classes * pixels + (num_classes + 1) * scaled_pixels)


def proc_bytes(path: str, field: str) -> int | None:
    """A ``field:  N kB`` line of a Linux /proc file in bytes (None where there is no such file or line)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def free_bytes(device: torch.device) -> int:
    """Memory free for new tensors on ``device``: the CUDA driver's count, or the OS's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    available = proc_bytes("/proc/meminfo", "MemAvailable")
    return available if available is not None else os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def auto_max_batch(per_item_bytes: int, crop_pixels: int, free: int) -> int:
    """Crops per model call (and images in flight): as many as fit in half the free memory, at most
    :data:`PIXELS_PER_CALL` pixels and :data:`MAX_AUTO_BATCH` crops, at least one."""
    by_memory = int(BUDGET_SHARE * free) // max(1, per_item_bytes)
    by_pixels = PIXELS_PER_CALL // max(1, crop_pixels)
    return max(1, min(by_memory, by_pixels, MAX_AUTO_BATCH))

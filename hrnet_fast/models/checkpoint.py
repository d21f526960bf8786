"""Loading official (and our own) checkpoints, with readable errors when they do not fit.

Accepted: a path to a ``.pth``/``.pt`` file (read with ``weights_only=True``), a state_dict, or a
dict wrapping one under ``state_dict`` / ``model`` / ``model_state_dict``. Prefixes the official
training code adds are stripped where the model itself has no such keys: ``module.``
(DataParallel), ``model.`` (the segmentation repo's FullModel, whose ``loss.*`` buffers are
dropped with it) and ``backbone.`` (detector checkpoints).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .configs import ARCHS

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
PREFIXES = ("module.", "model.", "backbone.")
_SHOW = 8  # keys listed per category in an error message


class CheckpointError(RuntimeError):
    """A checkpoint could not be read, or is not a state_dict."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's keys or shapes do not fit the model; the message lists what differs."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str], mismatched: list[str]):
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did: keys left out either way, prefixes stripped, keys dropped."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    stripped_prefixes: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def read_state_dict(src: str | os.PathLike | Mapping, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """A plain ``{key: tensor}`` dict from a path or a (possibly wrapped) mapping."""
    obj = src
    if isinstance(src, str | os.PathLike):
        path = os.fspath(src)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"{path} holds more than tensors, so it was not loaded with weights_only=True "
                f"(a state_dict of tensors is expected; load it yourself only if you trust the file): {exc}"
            ) from exc
        except Exception as exc:
            raise CheckpointError(f"could not read checkpoint {path} (corrupt or not a PyTorch file?): {exc}") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"a checkpoint must be a state_dict (a mapping), got {type(obj).__name__}")
    while wrapped := [k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]:
        obj = obj[wrapped[0]]
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"not a state_dict: {len(bad)} entries are not tensors, e.g. {bad[:_SHOW]}; "
            f"expected {{name: tensor}}, optionally under one of {WRAPPER_KEYS}"
        )
    return dict(obj)


def adapt_keys(sd: dict[str, Tensor], model_keys: set[str]) -> tuple[dict[str, Tensor], LoadReport]:
    """Strip the training wrappers' prefixes that the model does not have itself."""
    report = LoadReport()
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in sd) and not any(k.startswith(prefix) for k in model_keys):
            sd = {k.removeprefix(prefix): v for k, v in sd.items()}
            report.stripped_prefixes.append(prefix)
            if prefix == "model.":
                report.dropped = [k for k in sd if k.startswith("loss.") and k not in model_keys]
                sd = {k: v for k, v in sd.items() if k not in report.dropped}
    return sd, report


def guess_arch(sd: Mapping[str, Tensor]) -> str | None:
    """Name the arch a state_dict was made for, from its stage-4 widths and stage-3 module count."""
    widths = []
    for k in range(4):
        w = sd.get(f"stage4.0.branches.{k}.0.conv1.weight")
        if w is None:
            return None
        widths.append(w.shape[0])
    modules3 = len({key.split(".")[1] for key in sd if key.startswith("stage3.")})
    for name, spec in ARCHS.items():
        if tuple(widths) == spec.widths and modules3 == spec.stage3.num_modules:
            return name
    return f"unknown (widths {'/'.join(map(str, widths))})"


def guess_head(sd: Mapping[str, Tensor]) -> str:
    if any(k.startswith("neck.") for k in sd):
        return "v2p"
    if "classifier.weight" in sd:
        return "cls"
    if any(k.startswith("last_layer.") for k in sd):
        return "seg"
    if "final_layer.weight" in sd:
        return "pose"
    return "features"


def read_head_checkpoint(
    checkpoint: str | os.PathLike | Mapping,
    head: str,
    weight_key: str,
    arch: str | None,
    error: type[Exception],
) -> tuple[dict[str, Tensor], Tensor, str]:
    """``(state_dict, head weight, arch)`` of a checkpoint for an app built on one head.

    ``weight_key`` names the head's weight that the app reads its sizes from (joint or class count),
    in the plain key layout (without ``module.``/``model.``/``backbone.``). ``arch=None`` takes the
    arch the weights were made for. Raises ``error`` (the app's input error) for a checkpoint
    without that head or whose arch cannot be told.
    """
    state = read_state_dict(checkpoint)
    plain, _ = adapt_keys(state, set())
    weight = plain.get(weight_key)
    if guess_head(plain) != head or weight is None:
        raise error(
            f"checkpoint {checkpoint} has no {head} head ({weight_key}); "
            f"it looks like a {guess_head(plain)!r} checkpoint"
        )
    if arch is None:
        arch = guess_arch(plain)
        if arch not in ARCHS:
            raise error(f"cannot tell the arch of checkpoint {checkpoint} ({arch}); pass it explicitly")
    return state, weight, arch


def _listing(title: str, items: list[str]) -> str:
    more = f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return f"\n  {len(items)} {title}:\n    " + "\n    ".join(items[:_SHOW]) + more


def load_checkpoint(
    model: nn.Module,
    src: str | os.PathLike | Mapping,
    *,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> LoadReport:
    """Load an official or hrnet_fast checkpoint into ``model``.

    Raises :class:`CheckpointMismatchError` listing the missing and unexpected keys and the shape
    mismatches (and naming the arch/head the checkpoint seems made for) when it does not fit;
    with ``strict=False`` missing/unexpected keys are allowed and reported, shape mismatches never.
    """
    sd = read_state_dict(src, map_location)
    expected = model.state_dict()
    sd, report = adapt_keys(sd, set(expected))
    report.missing = [k for k in expected if k not in sd]
    report.unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)}"
        for k, v in sd.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if mismatched or (strict and (report.missing or report.unexpected)):
        what = f"{type(model).__name__}"
        arch, head = getattr(model, "arch", None), getattr(model, "head", None)
        if arch is not None:
            what = f"HRNet(arch={arch.name!r}, head={head!r})"
        hint = ""
        ck_arch, ck_head = guess_arch(sd), guess_head(sd)
        if ck_arch is not None and (arch is None or ck_arch != arch.name or ck_head != head):
            hint = f"\n  the checkpoint looks like arch {ck_arch!r} with head {ck_head!r}"
        message = (
            f"checkpoint does not fit {what}:{hint}"
            + (_listing("shape mismatches", mismatched) if mismatched else "")
            + (_listing("missing keys (in the model, not in the checkpoint)", report.missing) if report.missing else "")
            + (
                _listing("unexpected keys (in the checkpoint, not in the model)", report.unexpected)
                if report.unexpected
                else ""
            )
        )
        raise CheckpointMismatchError(message, report.missing, report.unexpected, mismatched)
    model.load_state_dict(sd, strict=strict)
    if report.stripped_prefixes or report.dropped:
        log.info("load_checkpoint: stripped prefixes %s, dropped %s", report.stripped_prefixes, report.dropped)
    return report

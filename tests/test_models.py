"""The reference HRNet family: every arch x head, official layout and outputs, odd sizes, training."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from official_data import OFFICIAL, official_outputs, official_shapes, synthetic_input, synthetic_state_dict

from hrnet_fast import ARCHS, HEADS, HRNet
from hrnet_fast.models import Head, heads, register_head
from hrnet_fast.nn import MultiResolutionFusion


def _size(x: int, halvings: int) -> int:
    for _ in range(halvings):
        x = math.ceil(x / 2)
    return x


def expected_shapes(arch: str, head: str, n: int, h: int, w: int, num_out: int) -> list[tuple[int, ...]]:
    c = ARCHS[arch].widths
    quarter = (_size(h, 2), _size(w, 2))
    if head == "pose" or head == "seg":
        return [(n, num_out, *quarter)]
    if head == "cls":
        return [(n, num_out)]
    if head == "features":
        return [(n, c[k], _size(h, k + 2), _size(w, k + 2)) for k in range(4)]
    return [(n, 256, quarter[0] // 2**k, quarter[1] // 2**k) for k in range(5)]  # v2p: avg-pool floors


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_and_head_builds_with_official_output_shapes(arch, head):
    kw = {"pose": {"num_joints": 5}, "seg": {"num_classes": 7}, "cls": {"num_classes": 11}}.get(head, {})
    model = HRNet(arch, head=head, **kw).eval()
    assert isinstance(model, HRNet) and model.head == head
    x = torch.randn(2, 3, 90, 66)
    with torch.no_grad():
        out = model(x)
    outs = list(out) if isinstance(out, tuple) else [out]
    assert [tuple(o.shape) for o in outs] == expected_shapes(arch, head, 2, 90, 66, next(iter(kw.values()), 0))
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize(("arch", "params"), [("w32", 28_536_113), ("w48", 63_595_745)])
def test_pose_parameter_counts_match_published(arch, params):
    with torch.device("meta"):
        model = HRNet(arch, head="pose")
    n = sum(p.numel() for p in model.parameters())
    assert n == params
    assert round(n / 1e6, 1) == {"w32": 28.5, "w48": 63.6}[arch]


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_state_dict_layout_is_the_official_one(name):
    arch, head, _ = OFFICIAL[name]
    with torch.device("meta"):
        model = HRNet(arch, head=head)
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == list(official_shapes(name).items())


@pytest.mark.parametrize("name", [n for n, (_, _, size) in OFFICIAL.items() if size])
def test_outputs_match_the_official_definition(name):
    arch, head, size = OFFICIAL[name]
    model = HRNet(arch, head=head).eval()
    model.load_state_dict(synthetic_state_dict(official_shapes(name)), strict=True)
    with torch.no_grad():
        out = model(synthetic_input(size))
    ref = official_outputs()[name]
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-6 * ref.abs().max().item())


@pytest.mark.parametrize("head", HEADS)
def test_odd_input_sizes_upsample_to_each_branch_actual_size(head):
    model = HRNet("w18_small_v1", head=head).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 250, 190))
    outs = list(out) if isinstance(out, tuple) else [out]
    num_out = {"pose": 17, "seg": 19, "cls": 1000}.get(head, 0)
    assert [tuple(o.shape) for o in outs] == expected_shapes("w18_small_v1", head, 1, 250, 190, num_out)


def test_defaults_follow_each_official_family_and_bilinear_is_one_argument_away():
    fusions = lambda m: [f for f in m.modules() if isinstance(f, MultiResolutionFusion)]  # noqa: E731
    assert {f.upsample for f in fusions(HRNet("w18_small_v1", head="pose"))} == {"nearest"}
    assert {f.upsample for f in fusions(HRNet("w18_small_v1", head="cls"))} == {"nearest"}
    seg = HRNet("w18_small_v1", head="seg")
    assert {(f.upsample, f.align_corners) for f in fusions(seg)} == {("bilinear", False)}
    paper = HRNet("w18_small_v1", head="pose", upsample="bilinear", align_corners=True)
    assert {(f.upsample, f.align_corners) for f in fusions(paper)} == {("bilinear", True)}

    nearest = HRNet("w18_small_v1", head="pose").eval()
    paper.load_state_dict(nearest.state_dict())
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert not torch.allclose(nearest(x), paper.eval()(x))


def test_pose_last_module_fuses_only_the_high_resolution_branch():
    model = HRNet("w32", head="pose")
    last = model.stage4[-1].fuse_layers
    assert len(last) == 1 and len(model.stage4[0].fuse_layers) == 4
    seg = HRNet("w32", head="seg")
    assert len(seg.stage4[-1].fuse_layers) == 4


def test_training_step_gives_finite_gradients_to_every_parameter():
    model = HRNet("w18_small_v1", head="seg", num_classes=3).train()
    x = torch.randn(2, 3, 64, 48)
    target = torch.randint(0, 3, (2, 16, 12))
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    fuse_grad = model.stage4[0].fuse_layers[0][3][0].weight.grad
    assert fuse_grad.abs().sum() > 0


def test_hrnet_is_a_plain_class_whose_heads_survive_copy_and_pickle():
    model = HRNet("w18_small_v1", head="pose")
    assert type(model) is HRNet and model.head == "pose" and "__new__" not in vars(HRNet)
    clone = copy.deepcopy(model)
    again = pickle.loads(pickle.dumps(model))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model.eval()(x)
        torch.testing.assert_close(clone.eval()(x), ref)
        torch.testing.assert_close(again.eval()(x), ref)


class _MeanHead(Head):
    """A head added from outside the package: the mean of each stage-4 branch."""

    name = "test-mean"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def build(self, model):
        model.mean_scale = torch.nn.Parameter(torch.tensor(self.scale))

    def forward(self, model, features):
        return torch.cat([f.mean((2, 3)) for f in features], dim=1) * model.mean_scale


def test_a_registered_head_builds_like_the_official_ones(monkeypatch):
    monkeypatch.setitem(heads.HEADS, "test-mean", _MeanHead)
    model = HRNet("w18_small_v1", head="test-mean", scale=2.0).eval()
    assert "mean_scale" in model.state_dict()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = torch.cat([f.mean((2, 3)) for f in model.forward_features(x)], dim=1) * 2
        torch.testing.assert_close(model(x), expected)
    with pytest.raises(ValueError, match="registered twice"):
        register_head(_MeanHead)


def test_unknown_arch_head_and_wrong_head_keywords_are_clear_errors():
    with pytest.raises(ValueError, match="unknown HRNet arch 'w33'.*w18_small_v1"):
        HRNet("w33")
    with pytest.raises(ValueError, match="unknown head 'depth'.*pose"):
        HRNet("w32", head="depth")
    with pytest.raises(TypeError, match="num_classes"):
        HRNet("w32", head="pose", num_classes=3)
    with pytest.raises(ValueError, match="upsampling mode"):
        HRNet("w32", upsample="bicubic")
    with pytest.raises(ValueError, match="align_corners=True only applies"):
        HRNet("w32", upsample="nearest", align_corners=True)


def test_bad_inputs_are_clear_errors():
    model = HRNet("w18_small_v1", head="pose").eval()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(3, 64, 48\)"):
        model(torch.randn(3, 64, 48))
    with pytest.raises(ValueError, match=r"got \(1, 1, 64, 48\)"):
        model(torch.randn(1, 1, 64, 48))
    with pytest.raises(TypeError, match="torch.float64 but the model's weights are torch.float32"):
        model(torch.randn(1, 3, 64, 48, dtype=torch.float64))
    with pytest.raises(ValueError, match="input is on meta but the model is on cpu"):
        model(torch.randn(1, 3, 64, 48, device="meta"))
    with pytest.raises(TypeError, match="got list"):
        model([torch.randn(1, 3, 64, 48)])
    with pytest.raises(ValueError, match=r"v2p pyramid .* at least 64x64.*got \(16, 12\)"):
        HRNet("w18_small_v1", head="v2p").eval()(torch.randn(1, 3, 64, 48))


def test_compiles_with_no_graph_break():
    model = HRNet("w18_small_v1", head="seg").eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))

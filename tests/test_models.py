"""Registry, model shapes and sizes, and official checkpoint layouts (CPU, random weights)."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest
import torch
from torch import nn

from distill.models.checkpoints import CheckpointLayoutError, load_official_checkpoint
from distill.models.complexity import count_macs, count_params
from distill.models.layers import Add, ConvBNAct
from distill.models.senet_ffr import load_ffr_weights
from distill.registry import Registry, UnknownNameError, create_model, list_models
from edge.errors import ConfigError, ModelFileError

IRESNET = "insightface_iresnet"
TINY = ["mobilefacenet_tiny", "mobilefacenet_relu_tiny", "iresnet_tiny", "senet50_ffr_tiny"]
# Full-size models get one forward of batch 1; iresnet100 is only counted (test_param_counts).
FULL = [
    ("mobilefacenet", 128), ("mobilefacenet_512", 512), ("mobilefacenet_relu", 128),
    ("mobilefacenet_relu_512", 512), ("iresnet18", 512), ("iresnet50", 512),
    ("senet50", 512), ("senet50_ffr", 512),
]

# Golden fragments: the first and last keys (with shapes) of the state_dicts defined by the
# public code, produced by instantiating it:
#   iresnet50: fdbtrs/ElasticFace backbones/iresnet.py iresnet50() (= insightface arcface_torch)
#   se50:      haoosz/FFR-Net pretrain/model_ir_se50.py Backbone(50, 0.6, 'ir_se')
#   recnet:    haoosz/FFR-Net models/recnet.py RecNet() (its classifier.weight is dropped on load)
IRESNET50_KEYS = (475, [
    ("conv1.weight", (64, 3, 3, 3)), ("bn1.weight", (64,)), ("bn1.bias", (64,)),
    ("bn1.running_mean", (64,)), ("bn1.running_var", (64,)), ("bn1.num_batches_tracked", ()),
    ("prelu.weight", (64,)), ("layer1.0.bn1.weight", (64,)), ("layer1.0.bn1.bias", (64,)),
    ("layer1.0.bn1.running_mean", (64,)),
], [
    ("bn2.running_mean", (512,)), ("bn2.running_var", (512,)), ("bn2.num_batches_tracked", ()),
    ("fc.weight", (512, 25088)), ("fc.bias", (512,)), ("features.weight", (512,)),
    ("features.bias", (512,)), ("features.running_mean", (512,)),
    ("features.running_var", (512,)), ("features.num_batches_tracked", ()),
])
SE50_KEYS = (402, [
    ("input_layer.0.weight", (64, 3, 3, 3)), ("input_layer.1.weight", (64,)),
    ("input_layer.1.bias", (64,)), ("input_layer.1.running_mean", (64,)),
    ("input_layer.1.running_var", (64,)), ("input_layer.1.num_batches_tracked", ()),
    ("input_layer.2.weight", (64,)), ("output_layer.0.weight", (512,)),
    ("output_layer.0.bias", (512,)), ("output_layer.0.running_mean", (512,)),
], [
    ("body.23.res_layer.1.weight", (512, 512, 3, 3)), ("body.23.res_layer.2.weight", (512,)),
    ("body.23.res_layer.3.weight", (512, 512, 3, 3)), ("body.23.res_layer.4.weight", (512,)),
    ("body.23.res_layer.4.bias", (512,)), ("body.23.res_layer.4.running_mean", (512,)),
    ("body.23.res_layer.4.running_var", (512,)), ("body.23.res_layer.4.num_batches_tracked", ()),
    ("body.23.res_layer.5.fc1.weight", (32, 512, 1, 1)),
    ("body.23.res_layer.5.fc2.weight", (512, 32, 1, 1)),
])
RECNET_KEYS = (120, [
    ("Conv4Space.0.conv2d.weight", (256, 561, 3, 3)), ("Conv4Space.0.relu.func.weight", (256,)),
    ("Conv4Space.0.norm.norm.weight", (256,)), ("Conv4Space.0.norm.norm.bias", (256,)),
], [
    ("Conv4Merge.1.conv2.conv2d.weight", (512, 512, 3, 3)),
    ("Conv4Merge.1.conv2.relu.func.weight", (512,)),
    ("Conv4Merge.1.conv2.norm.norm.weight", (512,)), ("Conv4Merge.1.conv2.norm.norm.bias", (512,)),
    ("Conv4Merge.1.conv2.norm.norm.running_mean", (512,)),
    ("Conv4Merge.1.conv2.norm.norm.running_var", (512,)),
    ("Conv4Merge.1.conv2.norm.norm.num_batches_tracked", ()),
])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _faces(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 112, 112)


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# --- registry ---------------------------------------------------------------------------

def test_registry_refuses_duplicate_names():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)


def test_registry_unknown_name_lists_known_names():
    reg = Registry("loss")
    reg.register("cosine")(lambda scale=1: scale)
    assert reg.create("cosine", scale=3) == 3 and reg.names() == ["cosine"]
    with pytest.raises(UnknownNameError, match=r"unknown loss 'l3'; known: cosine") as info:
        reg.create("l3")
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConfigError)


def test_create_model_unknown_lists_models():
    with pytest.raises(ValueError, match="mobilefacenet_tiny.*senet50_ffr"):
        create_model("mobilefacenet_v9")
    extra = {"iresnet34", "iresnet100", "mobilefacenet_tf", "mobilefacenet_tf_relu"}  # tested elsewhere
    assert {name for name, _ in FULL} | set(TINY) | extra == set(list_models())


# --- shapes, finiteness, sizes ----------------------------------------------------------

@pytest.mark.parametrize("name", TINY)
def test_tiny_models_embed(name):
    model = create_model(name)
    out = _embed(model, _faces())
    assert out.shape[0] == 2 and out.ndim == 2 and torch.isfinite(out).all()
    # Unnormalised: models stay pure, normalisation belongs to the caller.
    assert not torch.allclose(out.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("name,dim", FULL)
def test_full_models_embed(name, dim):
    out = _embed(create_model(name), _faces(1))
    assert out.shape == (1, dim) and torch.isfinite(out).all()


def test_param_counts_and_macs():
    # 1,003,136 is the paper-table count quoted in shared/TOOLCHAIN.md; 221M MACs in the paper.
    mfn = create_model("mobilefacenet")
    assert count_params(mfn) == 1_003_136
    assert 0.21e9 < count_macs(mfn) < 0.23e9
    # On the meta device: shapes without memory or init time, enough to count.
    with torch.device("meta"):
        assert count_params(create_model("mobilefacenet_relu")) == 1_003_136 - 7_552  # no PReLU
        assert count_params(create_model("iresnet50")) == 43_590_848  # ~43.6M, 512-d fc
        assert count_params(create_model("iresnet100")) == 65_156_160


# --- quantization friendliness ------------------------------------------------------------

def test_relu_student_is_fusable_and_adds_are_modules():
    model = create_model("mobilefacenet_relu_tiny").eval()
    assert not any(isinstance(m, nn.PReLU) for m in model.modules())
    adds = [m for m in model.modules() if isinstance(m, Add)]
    assert len(adds) == 2  # the two stride-1 equal-width rows of TINY_SETTINGS
    groups = [
        [f"{name}.0", f"{name}.1"] + ([f"{name}.2"] if len(m) == 3 else [])
        for name, m in model.named_modules() if isinstance(m, ConvBNAct)
    ]
    x = _faces()
    fused = torch.ao.quantization.fuse_modules(model, groups, inplace=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    torch.testing.assert_close(_embed(fused, x), _embed(model, x), atol=1e-4, rtol=1e-4)


def test_distill_imports_no_quantize_or_runtime():
    code = (
        "import sys, distill.models; "
        "print([m for m in sys.modules if m.startswith(('quantize', 'edge.runtimes'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- official checkpoint layouts ----------------------------------------------------------

def _assert_fragment(state: dict, golden) -> None:
    count, head, tail = golden
    items = [(k, tuple(v.shape)) for k, v in state.items()]
    assert len(items) == count
    assert items[: len(head)] == head and items[-len(tail):] == tail


def test_official_key_layouts_match_public_code():
    _assert_fragment(create_model("iresnet50").state_dict(), IRESNET50_KEYS)
    teacher = create_model("senet50_ffr")
    _assert_fragment(teacher.backbone.state_dict(), SE50_KEYS)
    recnet = dict(teacher.rectifier.state_dict())
    recnet["classifier.weight"] = torch.zeros(10575, 512)  # upstream keeps its head in the file
    count, head, tail = RECNET_KEYS
    _assert_fragment(recnet, (count + 1, head, tail + [("classifier.weight", (10575, 512))]))


def test_iresnet_loads_ddp_wrapped_checkpoint_strictly(tmp_path):
    source, target = create_model("iresnet_tiny"), create_model("iresnet_tiny")
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "backbone.pth")
    load_official_checkpoint(target, tmp_path / "backbone.pth", layout=IRESNET)
    x = _faces()
    torch.testing.assert_close(_embed(target, x), _embed(source, x))


def test_ffr_files_load_into_teacher(tmp_path):
    source, target = create_model("senet50_ffr_tiny"), create_model("senet50_ffr_tiny")
    torch.save(source.backbone.state_dict(), tmp_path / "se50.pth")
    rec = dict(source.rectifier.state_dict(), **{"classifier.weight": torch.randn(10575, 16)})
    # FFR-Net's trainer writes {'RecNet': ..., 'optimizer': ..., 'epoch', 'iter'} through gzip.
    with gzip.open(tmp_path / "FFRNet.pth", "wb") as f:
        torch.save({"RecNet": rec, "optimizer": {"state": {}}, "epoch": 7, "iter": 4000}, f)
    load_ffr_weights(target, tmp_path / "se50.pth", tmp_path / "FFRNet.pth")
    x = _faces()
    torch.testing.assert_close(_embed(target, x), _embed(source, x))


def test_pre_041_checkpoint_without_batch_counters_loads(tmp_path):
    source = create_model("iresnet_tiny")
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    load_official_checkpoint(create_model("iresnet_tiny"), tmp_path / "old.pth", IRESNET)


def test_wrong_layout_names_keys_and_expected_file(tmp_path):
    torch.save(create_model("iresnet_tiny").state_dict(), tmp_path / "backbone.pth")
    with pytest.raises(CheckpointLayoutError) as info:
        load_official_checkpoint(
            create_model("senet50_ffr_tiny"), tmp_path / "backbone.pth", "ffr_se50"
        )
    msg = str(info.value)
    assert "'ffr_se50' layout" in msg and "se50.pth" in msg
    assert "missing" in msg and "input_layer.0.weight" in msg
    assert "unexpected" in msg and "conv1.weight" in msg


def test_wrong_variant_reports_shapes(tmp_path):
    torch.save(create_model("iresnet_tiny", num_features=64).state_dict(), tmp_path / "b.pth")
    shapes = r"wrong shape.*fc.weight: file \(64, 784\) vs model \(32, 784\)"
    with pytest.raises(CheckpointLayoutError, match=shapes):
        load_official_checkpoint(create_model("iresnet_tiny"), tmp_path / "b.pth", IRESNET)


def test_wrapper_without_state_dict_is_refused(tmp_path):
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "x.pth")
    with pytest.raises(CheckpointLayoutError, match="holds no state_dict"):
        load_official_checkpoint(create_model("iresnet_tiny"), tmp_path / "x.pth", IRESNET)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing", "gzip_truncate"])
def test_corrupt_files_raise_model_file_error(tmp_path, damage):
    path = tmp_path / "backbone.pth"
    torch.save(create_model("iresnet_tiny").state_dict(), path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "missing":
        path.unlink()
    else:
        path.write_bytes(gzip.compress(data)[: len(data) // 3])
    with pytest.raises(ModelFileError, match="truncated or corrupt|empty|not found"):
        load_official_checkpoint(create_model("iresnet_tiny"), path, IRESNET)


def test_unknown_layout_lists_layouts():
    with pytest.raises(UnknownNameError, match="ffr_recnet.*insightface_iresnet"):
        load_official_checkpoint(create_model("iresnet_tiny"), "x.pth", "arcface")

"""Loss registry and terms; template KD pulls a tiny student toward a real teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.data.dataset import to_tensor
from distill.losses import LOSSES, ArcFace, DistillLoss, ElasticArc, ElasticCos, loss_params
from distill.registry import UnknownNameError, create_model
from edge.errors import ConfigError
from tests.conftest import lfw_bytes

FACES = [("Aaron_Peirsol", 1), ("Abdullah_Gul", 1), ("Adrien_Brody", 1), ("Al_Gore", 1),
         ("Alejandro_Toledo", 1), ("Alvaro_Uribe", 1), ("Amelie_Mauresmo", 1), ("Andre_Agassi", 1)]


def test_registry_lists_losses_and_rejects_bad_terms():
    assert {"kd_mse", "kd_cosine", "arcface", "elastic_arc", "elastic_cos"} <= set(LOSSES.names())
    with pytest.raises(UnknownNameError, match="kd_mse"):
        DistillLoss([("kd_l1", 1.0, {})], 8)
    with pytest.raises(ConfigError, match="valid: scale, margin"):
        DistillLoss([("arcface", 1.0, {"marg": 0.5})], 8, 4)
    with pytest.raises(ConfigError, match="identity labels"):
        DistillLoss([("arcface", 1.0, {})], 8, 0)
    with pytest.raises(ConfigError, match="weight"):
        DistillLoss([("kd_mse", -1.0, {})], 8)
    assert loss_params("elastic_cos") == ["scale", "margin", "std", "plus"]


def test_kd_terms_are_zero_at_the_teacher_and_scale_free():
    torch.manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    loss = DistillLoss([("kd_mse", 1.0, {}), ("kd_cosine", 2.0, {})], 16)
    total, parts = loss(teacher * 7.0, teacher)
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    total, parts = loss(-teacher, teacher)  # opposite: |s - t|^2 = 4, 1 - cos = 2
    assert parts["kd_mse"].item() == pytest.approx(4.0) and parts["kd_cosine"].item() == pytest.approx(2.0)
    assert total.item() == pytest.approx(8.0)


@pytest.mark.parametrize("head", [ArcFace(8, 5), ElasticArc(8, 5), ElasticCos(8, 5),
                                  ElasticArc(8, 5, plus=True)])
def test_margin_heads_penalise_the_target_and_train(head):
    torch.manual_seed(0)
    labels = torch.arange(5)
    emb = torch.randn(5, 8, requires_grad=True)
    loss = head(emb, None, labels)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(emb.grad).all()
    plain = torch.nn.functional.cross_entropy(
        64.0 * torch.nn.functional.linear(torch.nn.functional.normalize(emb.detach()),
                                          torch.nn.functional.normalize(head.weight.detach())), labels)
    assert loss.item() > plain.item()  # the margin makes the target harder


def test_elastic_margins_follow_the_seed_and_plus_sorts_them():
    head = ElasticArc(8, 4, std=0.1, plus=True)
    target = torch.tensor([0.9, 0.1, 0.5, 0.7])
    torch.manual_seed(1)
    first = head._margins(target)
    torch.manual_seed(1)
    assert torch.equal(first, head._margins(target))
    # closest to its centre (0.9) gets the smallest margin, farthest (0.1) the largest
    assert first.argmin().item() == 0 and first.argmax().item() == 1


@pytest.mark.realdata
def test_template_kd_pulls_a_tiny_student_toward_sface(data_root):
    from distill.teachers import create_teacher
    from edge.align import align
    from edge.detect import create_detector
    from edge.image import read_image

    detector = create_detector("yunet", input_size=(256, 256))
    crops = []
    for name, number in FACES:
        image = read_image(lfw_bytes(data_root, name, number))
        crops.append(align(image, detector.detect(image)[0].landmarks))
    crops = np.stack(crops)
    templates = torch.from_numpy(create_teacher("sface", threads=2).embed(crops))
    torch.manual_seed(0)
    student = create_model("mobilefacenet_tiny", embedding_size=templates.shape[1])
    criterion = DistillLoss([("kd_mse", 1.0, {}), ("kd_cosine", 1.0, {})], templates.shape[1])
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    x = to_tensor(crops)
    losses, cosines = [], []
    for _ in range(40):
        emb = student(x)
        loss, _ = criterion(emb, templates)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        cosines.append(torch.nn.functional.cosine_similarity(emb, templates).mean().item())
    assert losses[-1] < 0.5 * losses[0]
    assert cosines[-1] > cosines[0] + 0.3 and cosines[-1] > 0.5

"""Pretrained teachers (qd/pretrained.py): torchvision's V1 weights loaded into qd.models.resnet.resnet from
a local file. Nothing is downloaded: the files are saved here from randomly initialised torchvision
models, and the download path is exercised with torch hub's downloader replaced by a copy."""
from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
import torchvision

import qd.pretrained as pre
from qd.errors import DataMissing


def test_table_is_torchvisions_v1_weights():
    from torchvision.models import get_weight

    for name, spec in pre.TEACHERS.items():
        w = get_weight(spec.weights)
        assert w.url == spec.url
        acc = w.meta["_metrics"]["ImageNet-1K"]
        assert (acc["acc@1"], acc["acc@5"]) == (spec.top1, spec.top5)
        assert spec.weights.endswith("IMAGENET1K_V1") and name == f"resnet{spec.depth}"
    # the paper's ResNet-50 teacher is V1 (76.13%), not DEFAULT = V2 (80.86%)
    from torchvision.models import ResNet34_Weights, ResNet50_Weights

    assert ResNet50_Weights.DEFAULT.url != pre.TEACHERS["resnet50"].url
    assert ResNet34_Weights.DEFAULT.url == pre.TEACHERS["resnet34"].url
    # Table D's teacher accuracies are these weights' (73.31 / 91.42, 76.13 / 92.86)
    assert round(pre.TEACHERS["resnet34"].top1, 2) == 73.31 and round(pre.TEACHERS["resnet50"].top5, 2) == 92.86
    assert pre.TEACHERS["resnet34"].hash_prefix == "b627a593"


@pytest.fixture(scope="module")
def saved_resnet34(tmp_path_factory):
    torch.manual_seed(1)
    model = torchvision.models.resnet34()
    path = tmp_path_factory.mktemp("w") / "teacher.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_a_local_file_loads_into_our_resnet(saved_resnet34):
    path, state = saved_resnet34
    model, record = pre.load_pretrained("resnet34", path, check_hash=False)
    ours = model.state_dict()
    assert list(ours) == list(state) and all(torch.equal(ours[k], state[k]) for k in state)
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["weights"] == "ResNet34_Weights.IMAGENET1K_V1" and record["file"] == str(path)
    assert record["published_top1"] == 73.314
    # the same outputs as torchvision's model with these weights
    tv = torchvision.models.resnet34().eval()
    tv.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), tv(x))


def test_a_file_that_is_not_torchvisions_is_refused(saved_resnet34):
    path, _ = saved_resnet34
    with pytest.raises(DataMissing, match=r"teacher.pth is not torchvision's ResNet34_Weights.IMAGENET1K_V1: its "
                                          r"SHA-256 begins [0-9a-f]{8}, expected b627a593"):
        pre.load_pretrained("resnet34", path)


def test_a_folder_is_searched_for_torchvisions_file_name(saved_resnet34, tmp_path):
    path, _ = saved_resnet34
    with pytest.raises(DataMissing, match=r"resnet34-b627a593.pth for the pretrained resnet34 teacher .* does not "
                                          r"exist. Download https://download.pytorch.org/models/resnet34"):
        pre.load_pretrained("resnet34", tmp_path)
    shutil.copy(path, tmp_path / "resnet34-b627a593.pth")
    _, record = pre.load_pretrained("resnet34", tmp_path, check_hash=False)
    assert record["file"] == str(tmp_path / "resnet34-b627a593.pth")
    with pytest.raises(DataMissing, match="does not exist"):
        pre.load_pretrained("resnet34", tmp_path / "missing.pth")


def test_wrong_architecture_is_named(saved_resnet34, tmp_path):
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    # ResNet-18 lacks the third block of layer1 and more: 96 of ResNet-34's entries
    with pytest.raises(DataMissing, match=r"r18.pth does not hold ResNet-34 weights: 96 missing keys "
                                          r"\(e.g. layer1.2.bn1.bias.*0 unexpected"):
        pre.load_pretrained("resnet34", tmp_path / "r18.pth", check_hash=False)
    path, state = saved_resnet34
    torch.save({**state, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, tmp_path / "cifar.pth")
    with pytest.raises(DataMissing, match=r"(?s)cifar.pth does not fit ResNet-34: .*size mismatch for fc.weight"):
        pre.load_pretrained("resnet34", tmp_path / "cifar.pth", check_hash=False)


def test_download_uses_torchvisions_url_and_hash(saved_resnet34, tmp_path, monkeypatch):
    import torch.hub

    path, state = saved_resnet34
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        shutil.copy(path, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model, record = pre.load_pretrained("resnet34", tmp_path / "cache", download=True, check_hash=False)
    assert calls == [(pre.TEACHERS["resnet34"].url, None)]
    assert (tmp_path / "cache" / "resnet34-b627a593.pth").exists()
    assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])
    # with the check on, the downloader is asked to verify the prefix; a mismatch is reported as such
    (tmp_path / "cache" / "resnet34-b627a593.pth").unlink()
    with pytest.raises(DataMissing, match="is not torchvision's"):
        pre.load_pretrained("resnet34", tmp_path / "cache", download=True)
    assert calls[-1] == (pre.TEACHERS["resnet34"].url, "b627a593")

    def failing(url, dst, hash_prefix=None, progress=True):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", failing)
    with pytest.raises(DataMissing, match=r"could not download ResNet50_Weights.IMAGENET1K_V1 .*no route to host"):
        pre.load_pretrained("resnet50", tmp_path / "other", download=True)


def test_unknown_teacher():
    with pytest.raises(ValueError, match="no pretrained weights for 'vgg16'"):
        pre.load_pretrained("vgg16")

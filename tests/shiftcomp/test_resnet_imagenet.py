"""ImageNet ResNet-18/34/50: torchvision's parameter counts and state_dict names, DeepShift's layer order."""
from __future__ import annotations

import pytest
import torch

from shiftcomp.checkpoint_deepshift import deepshift_order
from shiftcomp.models import INPUT_SHAPES, get_model


@pytest.mark.parametrize("name,params", [("resnet18_imagenet", 11_689_512), ("resnet34_imagenet", 21_797_672),
                                         ("resnet50_imagenet", 25_557_032)])
def test_torchvision_parameter_counts(name, params) -> None:
    with torch.device("meta"):
        m = get_model(name, num_classes=1000)
    assert sum(p.numel() for p in m.parameters()) == params
    assert INPUT_SHAPES[name] == (3, 224, 224)


def test_torchvision_state_dict_names() -> None:
    with torch.device("meta"):
        sd18 = get_model("resnet18_imagenet", num_classes=1000).state_dict()
        sd50 = get_model("resnet50_imagenet", num_classes=1000).state_dict()
    for k in ("conv1.weight", "bn1.running_var", "layer1.0.conv2.weight", "layer2.0.downsample.0.weight",
              "layer2.0.downsample.1.num_batches_tracked", "layer4.1.bn2.bias", "fc.weight", "fc.bias"):
        assert k in sd18, k
    assert "layer1.0.downsample.0.weight" not in sd18
    assert "layer1.0.downsample.0.weight" in sd50 and tuple(sd50["layer1.0.conv3.weight"].shape) == (256, 64, 1, 1)
    assert tuple(sd50["layer2.0.conv2.weight"].shape) == (128, 128, 3, 3)   # stride on the 3x3 (v1.5)
    assert len(sd18) == 122 and len(sd50) == 320                            # torchvision's key counts


def test_forward_and_deepshift_order() -> None:
    m = get_model("resnet18_imagenet", num_classes=5).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    order = [n for n, _ in deepshift_order(m)]
    assert order[:4] == ["fc", "layer4.1.conv2", "layer4.1.conv1", "layer4.0.downsample.0"]

import pytest
import torch

from medrobust.errors import ConfigError
from medrobust.models import create_classifier, get_classifier_arch, list_classifiers


def test_required_architectures_are_registered():
    names = list_classifiers()
    for name in ("densenet121", "resnet18", "resnet50", "efficientnet-b0", "small_cnn"):
        assert name in names
    # aliases resolve to the same family
    assert get_classifier_arch("efficientnet_b0") is get_classifier_arch("efficientnet-b0")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list_classifiers())
def test_classifier_builds_2d_forward_backward(name, channels):
    torch.manual_seed(0)
    model = create_classifier(name, channels, 3)
    x = torch.rand(2, channels, 32, 32, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", [n for n in list_classifiers() if 3 in get_classifier_arch(n).spatial_dims])
def test_classifier_builds_3d(name):
    arch = get_classifier_arch(name)
    model = create_classifier(name, 1, 2, spatial_dims=3, **arch.test_kwargs)
    size = max(arch.min_size, 16)
    x = torch.rand(2, 1, size, size, size, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 2)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_small_cnn_handles_odd_sizes():
    model = create_classifier("small_cnn", 3, 4)
    assert model(torch.rand(1, 3, 28, 28)).shape == (1, 4)
    assert model(torch.rand(1, 3, 45, 61)).shape == (1, 4)


def test_unknown_name_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'densenet121'"):
        create_classifier("densenet12", 1, 2)


def test_unknown_kwarg_and_bad_sizes():
    with pytest.raises(ConfigError, match=r"has no parameter 'pretrained'\. Valid parameters: dropout_prob"):
        create_classifier("densenet121", 1, 2, pretrained=True)
    with pytest.raises(ConfigError, match="'num_classes' parameter"):
        create_classifier("small_cnn", 1, 1)
    with pytest.raises(ConfigError, match="'in_channels' parameter"):
        create_classifier("small_cnn", 0, 2)
    with pytest.raises(ConfigError, match="'spatial_dims' parameter"):
        create_classifier("small_cnn", 1, 2, spatial_dims=4)
    with pytest.raises(ConfigError, match="'width' parameter of small_cnn"):
        create_classifier("small_cnn", 1, 2, width=0)

"""DC5 as the official DC5 checkpoints were trained: torchvision's dilation convention.

Guards the fidelity of the Conditional / DAB-DETR DC5 configs (``model.backbone.dc5 = True``): with
the same weights, ``build_resnet(dc5=True)`` must compute what torchvision's
``resnet50(replace_stride_with_dilation=[False, False, True])`` computes.
"""
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from detr_core import build_resnet
from detr_core.convert import convert_backbone_key


def torchvision_dc5_r50():
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d, replace_stride_with_dilation=[False, False, True])
    for module in net.modules():  # non-trivial frozen statistics
        if isinstance(module, FrozenBatchNorm2d):
            module.running_var.uniform_(0.5, 1.5)
            module.running_mean.normal_(0, 0.1)
    return net.eval()


def run_torchvision(net, x):
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        x = getattr(net, name)(x)
    return x


def test_dc5_backbone_matches_torchvision_dilation():
    net = torchvision_dc5_r50()
    state = {convert_backbone_key("backbone.0.body." + k)[len("backbone."):]: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    ours = build_resnet(50, dc5=True, freeze_at=2).eval()
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        expected = run_torchvision(net, x)
        got = ours(x)["res5"]
        # detectron2's own RES5_DILATION=2 convention dilates res5[0] too: it would not match.
        conv = ours.res5[0].conv2
        conv.dilation, conv.padding = (2, 2), (2, 2)
        other = ours(x)["res5"]
    assert got.shape == expected.shape == (1, 2048, 6, 4)  # stride 16
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 1e-5 * scale
    assert (other - expected).abs().max() > 1e-2 * scale

"""Deprecated location: DC5 with torchvision's convention is now what ``build_resnet(dc5=True)`` builds."""
from .backbone import build_resnet, torchvision_dc5_

__all__ = ["torchvision_dc5_", "build_resnet_dc5"]


def build_resnet_dc5(depth: int = 50, **kwargs):
    return build_resnet(depth, dc5=True, **kwargs)

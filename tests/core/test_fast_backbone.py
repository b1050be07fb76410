"""The opt-in backbone speed-ups (``build_resnet(fold_frozen_bn=..., channels_last=...)``) compute what the
plain backbone computes, up to float32 rounding, keep its checkpoint keys, and train the same parameters."""
import pytest
import torch

from detr_core import build_resnet
from detr_core.backbone import FoldedFrozenBNConv2d
from detectron2.layers import FrozenBatchNorm2d

from tests.variants import load_config

# float32, a frozen-BN fold or a change of layout reorders sums: agreement to 1e-4 of the output's scale
RTOL = 1e-4


def random_frozen_statistics_(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, FrozenBatchNorm2d):
            for name, lo, hi in (("weight", 0.5, 1.5), ("bias", -0.2, 0.2), ("running_mean", -0.2, 0.2),
                                 ("running_var", 0.5, 1.5)):
                getattr(m, name).copy_(lo + (hi - lo) * torch.rand(getattr(m, name).shape, generator=g))
    return net


def tiny(**fast):
    torch.manual_seed(0)
    net = build_resnet(18, width=8, freeze_at=2, out_features=("res4",), **fast)
    return random_frozen_statistics_(net)


def close(a, b):
    return (a - b).abs().max().item() <= RTOL * b.abs().max().item()


@pytest.mark.parametrize("fast", [dict(fold_frozen_bn=True), dict(channels_last=True),
                                  dict(fold_frozen_bn=True, channels_last=True)], ids=str)
def test_fast_backbone_gives_the_plain_outputs_and_gradients(fast):
    plain, quick = tiny(), tiny(**fast)
    assert quick.state_dict().keys() == plain.state_dict().keys()
    quick.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert close(quick.eval()(x)["res4"], plain.eval()(x)["res4"])
    plain.train(), quick.train()
    out_p, out_q = plain(x)["res4"], quick(x)["res4"]
    assert close(out_q, out_p)
    weight = torch.randn_like(out_p)
    (out_p * weight).sum().backward()
    (out_q * weight).sum().backward()
    grads_p = dict((n, p.grad) for n, p in plain.named_parameters() if p.requires_grad)
    grads_q = dict((n, p.grad) for n, p in quick.named_parameters() if p.requires_grad)
    assert grads_q.keys() == grads_p.keys() and len(grads_p) > 0
    for name in grads_p:
        assert close(grads_q[name], grads_p[name]), name


def test_fold_replaces_every_conv_with_frozen_batchnorm_and_keeps_weights_trainable():
    net = tiny(fold_frozen_bn=True)
    convs = [m for m in net.modules() if isinstance(m, FoldedFrozenBNConv2d)]
    assert len(convs) == sum(isinstance(m, FrozenBatchNorm2d) for m in net.modules()) > 0
    assert any(m.weight.requires_grad for m in convs) and not all(m.weight.requires_grad for m in convs)


def test_channels_last_backbone_outputs_channels_last():
    out = tiny(channels_last=True).eval()(torch.randn(1, 3, 64, 48))["res4"]
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()


@pytest.mark.parametrize("config", ["configs/cond_detr/cond_detr_shapes.py", "configs/sam_detr/sam_detr_smca_shapes.py"])
def test_fast_backbone_model_detects_as_the_plain_model(config, two_image_batch):
    from detectron2.config import instantiate

    plain = instantiate(load_config(config).model)
    random_frozen_statistics_(plain.backbone)
    quick = instantiate(load_config(config, ["model.backbone.fold_frozen_bn=True",
                                             "model.backbone.channels_last=True"]).model)
    quick.load_state_dict(plain.state_dict())
    inputs = [{"image": x["image"]} for x in two_image_batch]
    with torch.no_grad():
        ours = [r["instances"] for r in quick.eval()(inputs)]
        ref = [r["instances"] for r in plain.eval()(inputs)]
    for a, b in zip(ours, ref):
        assert torch.allclose(a.scores, b.scores, rtol=0, atol=1e-4)
        assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-2)


@pytest.mark.parametrize("freeze_at", [2, 0], ids=["frozen stem", "trained stem"])
def test_stem_runs_channels_last_on_cpu_with_the_plain_stems_values(freeze_at):
    from detectron2.modeling.backbone import BasicStem

    from detr_core.backbone import ChannelsLastStem

    torch.manual_seed(0)
    quick = random_frozen_statistics_(build_resnet(18, width=8, freeze_at=freeze_at, out_features=("res3",)))
    assert type(quick.stem) is ChannelsLastStem
    plain = random_frozen_statistics_(build_resnet(18, width=8, freeze_at=freeze_at, out_features=("res3",)))
    plain.stem.__class__ = BasicStem
    plain.load_state_dict(quick.state_dict())
    x = torch.randn(2, 3, 64, 48)
    stem_out = quick.stem(x)
    assert stem_out.is_contiguous() and torch.allclose(stem_out, plain.stem(x), rtol=1e-6, atol=1e-6)
    out_q, out_p = quick(x)["res3"], plain(x)["res3"]
    assert close(out_q, out_p)
    weight = torch.randn_like(out_p)
    (out_q * weight).sum().backward()
    (out_p * weight).sum().backward()
    stem_grads = [(p.grad, q.grad) for p, q in zip(plain.stem.parameters(), quick.stem.parameters())]
    assert all((g is None) == (freeze_at > 0) for g, _ in stem_grads)
    for (_, p), (_, q) in zip(plain.named_parameters(), quick.named_parameters()):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            assert close(q.grad, p.grad)


def test_yacs_backbone_gets_the_channels_last_stem():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from detr_core import add_detr_config
    from detr_core.backbone import ChannelsLastStem

    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "DETR"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 18, 64
    cfg.MODEL.DETR.HIDDEN_DIM, cfg.MODEL.DETR.NUM_OBJECT_QUERIES = 32, 5
    cfg.MODEL.DETR.ENC_LAYERS = cfg.MODEL.DETR.DEC_LAYERS = 1
    assert type(build_model(cfg).backbone.stem) is ChannelsLastStem


def test_channels_last_stem_only_for_frozen_norms_and_stays_scriptable():
    from detectron2.modeling.backbone import BasicStem

    from detr_core.backbone import ChannelsLastStem

    # a training BatchNorm sums its batch statistics in layout order: that stem stays as it is
    assert type(build_resnet(18, width=8, norm="BN", freeze_at=0, out_features=("res3",)).stem) is BasicStem
    stem = random_frozen_statistics_(tiny()).stem.eval()
    assert type(stem) is ChannelsLastStem
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = stem(x)
        scripted = torch.jit.script(stem)(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # reduced precision: the plain stem's path
            amp = stem(x)
    assert torch.equal(scripted, expected) and scripted.is_contiguous()
    assert amp.dtype == torch.bfloat16 and amp.is_contiguous()

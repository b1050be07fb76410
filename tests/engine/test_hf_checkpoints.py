"""HuggingFace ``transformers`` checkpoints of Conditional DETR and DAB-DETR, converted by
tools/convert_official.py, give the detections of the transformers model itself.

A randomly initialised transformers model of a tiny configuration (transformers' own ResNet-18-like backbone,
built without pretrained weights, so nothing is downloaded) is saved with ``save_pretrained`` (safetensors)
and as a plain ``pytorch_model.bin``; both are converted onto the same tiny configuration of this project's
model, and both models' post-processed detections of one image are compared. Needs the ``transformers``
package (not a dependency of this project): skipped without it.
"""

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from tests.engine.tiny_checkpoints import CLASSES, D, FFN, HEADS, LAYERS, QUERIES, TOPK, WIDTH, tiny_config

pytestmark = pytest.mark.slow


def hf_config(cls, **extra):
    from transformers import ResNetConfig

    backbone = ResNetConfig(embedding_size=WIDTH, hidden_sizes=[WIDTH * 2**i for i in range(4)], depths=[2, 2, 2, 2],
                            layer_type="basic", out_features=["stage4"])
    return cls(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone,
               encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_attention_heads=HEADS,
               decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, num_queries=QUERIES,
               num_labels=CLASSES, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, **extra)


def randomise_(model, box_scale=1.0):
    """Random values everywhere, frozen BatchNorm statistics and the zero-initialised box layers included;
    ``box_scale`` scales the box heads' weights."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=gen) * 0.5 + 0.75 if "running_var" in name else \
                    torch.randn(tensor.shape, generator=gen) * (0.2 if tensor.dim() > 1 else 0.1)
                tensor.copy_(values * (box_scale if "bbox" in name else 1.0))


def detections_match(hf_model, cfg, tmp_path, variant, box_scale=1.0):
    from transformers import ConditionalDetrImageProcessor

    from tools.convert_official import convert

    randomise_(hf_model, box_scale)
    hf_model.eval()
    hf_model.save_pretrained(tmp_path / "hf")  # model.safetensors
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    config_file = tmp_path / "tiny.yaml"
    LazyConfig.save(cfg, str(config_file))

    # a picture with structure (a gradient and two boxes), so that where a query looks changes what it sees
    image = torch.linspace(0, 255, 96).expand(3, 64, 96).clone()
    image[:, 8:30, 10:40] = torch.tensor([255.0, 30.0, 30.0])[:, None, None]
    image[:, 36:60, 56:90] = torch.tensor([20.0, 200.0, 40.0])[:, None, None]
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        outputs = hf_model(pixel_values=((image / 255 - mean) / std)[None], pixel_mask=torch.ones(1, 64, 96, dtype=torch.long))
    hf = ConditionalDetrImageProcessor().post_process_object_detection(
        outputs, threshold=0.0, target_sizes=[(64, 96)], top_k=TOPK)[0]
    if variant == "dab_detr":
        # transformers' DAB-DETR clamps inverse_sigmoid at 1e-5, the official code (and this project) at 1e-3:
        # they agree while every anchor stays inside (1e-3, 1 - 1e-3), which the box-head scale ensures here
        with torch.no_grad():
            anchors = hf_model.model(pixel_values=((image / 255 - mean) / std)[None]).reference_points
        assert anchors.min() > 1e-3 and anchors.max() < 1 - 1e-3
    hf_boxes = hf["boxes"].clone()
    hf_boxes[:, 0::2] = hf_boxes[:, 0::2].clamp(0, 96)  # detectron2 clips boxes to the image
    hf_boxes[:, 1::2] = hf_boxes[:, 1::2].clamp(0, 64)
    assert hf_boxes.std(dim=0).min() > 1.0  # the detections differ in place: not a degenerate model

    for name in ("hf/model.safetensors", "pytorch_model.bin"):
        converted = convert(variant, str(tmp_path / name), str(tmp_path / f"{variant}.pth"), str(config_file))
        model = instantiate(cfg.model).eval()
        model.load_state_dict(converted, strict=True)
        with torch.no_grad():
            ours = model([{"image": image, "height": 64, "width": 96}])[0]["instances"]
        # the same top-k detections, compared in one order (queries of equal score may come in any order)
        theirs, mine = rows(hf["labels"], hf["scores"], hf_boxes), rows(ours.pred_classes, ours.scores, ours.pred_boxes.tensor)
        assert torch.equal(mine[:, 0], theirs[:, 0]), name
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


def rows(labels, scores, boxes):
    """(label, score, x1, y1, x2, y2) per detection, ordered by label, then x1, then y1."""
    table = torch.cat([labels[:, None].double(), scores[:, None].double(), boxes.double()], dim=1)
    for column in (3, 2, 0):  # stable sorts: the last one is the primary key
        table = table[torch.sort(table[:, column].round(decimals=2), stable=True).indices]
    return table


def test_conditional_detr_from_transformers(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the transformers package is not installed")
    hf_model = transformers.ConditionalDetrForObjectDetection(hf_config(transformers.ConditionalDetrConfig, d_model=D))
    detections_match(hf_model, tiny_config("configs/cond_detr/cond_detr_r50_50ep.py"), tmp_path, "cond_detr")


@pytest.mark.parametrize("patterns", [0, 3])
def test_dab_detr_from_transformers(tmp_path, patterns):
    transformers = pytest.importorskip("transformers", reason="the transformers package is not installed")
    hf_model = transformers.DabDetrForObjectDetection(
        hf_config(transformers.DabDetrConfig, hidden_size=D, num_patterns=patterns))
    cfg = tiny_config("configs/dab_detr/dab_detr_r50_50ep.py", num_patterns=patterns)
    detections_match(hf_model, cfg, tmp_path, "dab_detr", box_scale=0.1)

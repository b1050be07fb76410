"""detr_core.predictor.Predictor: LazyConfig or yacs, strict checkpoint loading, the model's input format."""
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg

from detr_core import add_detr_config
from detr_core.checkpointer import CheckpointMismatchError
from detr_core.predictor import Predictor

IMAGE = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)


def test_a_checkpoint_of_another_variant_is_refused(tmp_path):
    other = Predictor("configs/cond_detr/cond_detr_shapes.py", device="cpu", allow_random_init=True)
    path = str(tmp_path / "cond.pth")
    torch.save({"model": other.model.state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match=r"does not fit DETR"):
        Predictor("configs/detr/detr_shapes.py", path, device="cpu")
    same = Predictor("configs/cond_detr/cond_detr_shapes.py", path, device="cpu")  # the right model loads
    torch.testing.assert_close(same.model.class_embed.bias, other.model.class_embed.bias)
    partial = {k: v for k, v in other.model.state_dict().items() if not k.startswith("class_embed.")}
    torch.save({"model": partial}, path)
    with pytest.raises(CheckpointMismatchError, match=r"missing key class_embed\.weight"):
        Predictor("configs/cond_detr/cond_detr_shapes.py", path, device="cpu")


def model_inputs(model_format):
    """The image tensors an RGB input and the same input as BGR reach the model with."""
    predictor = Predictor("configs/detr/detr_shapes.py", device="cpu", opts=[f"model.input_format={model_format}"],
                          allow_random_init=True)
    seen = []
    original = predictor.model.preprocess_image
    predictor.model.preprocess_image = lambda batch: seen.append(batch[0]["image"]) or original(batch)
    scores = predictor(IMAGE).scores, predictor(IMAGE[:, :, ::-1].copy(), image_format="BGR").scores
    return seen, scores


def test_images_reach_the_model_in_its_input_format():
    rgb, rgb_scores = model_inputs("RGB")
    bgr, bgr_scores = model_inputs("BGR")
    for seen, scores in ((rgb, rgb_scores), (bgr, bgr_scores)):
        torch.testing.assert_close(seen[0], seen[1])  # RGB in or BGR in: the same tensor for the model
        torch.testing.assert_close(*scores)
    torch.testing.assert_close(bgr[0], rgb[0].flip(0))  # a BGR model gets the channels reversed
    assert (rgb[0][0] != rgb[0][2]).any()


def test_a_yacs_config_builds_the_predictor():
    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "DETR"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.DETR.NUM_CLASSES, cfg.MODEL.DETR.HIDDEN_DIM, cfg.MODEL.DETR.NUM_OBJECT_QUERIES = 3, 32, 5
    cfg.MODEL.DETR.ENC_LAYERS = cfg.MODEL.DETR.DEC_LAYERS = 1
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 96
    predictor = Predictor(cfg, device="cpu", allow_random_init=True)
    instances = predictor(IMAGE)
    assert instances.image_size == (48, 64) and len(instances) == 5
    assert predictor.model.transformer.d_model == 32 and not predictor.model.training


def test_no_weights_or_wrong_settings_are_refused():
    with pytest.raises(ValueError, match=r"Predictor needs weights .*allow_random_init=True"):
        Predictor("configs/detr/detr_shapes.py", device="cpu")
    with pytest.raises(ValueError, match=r"configs/detr/detr_shapes.py: model.num_queries=0 must be an integer >= 1"):
        Predictor("configs/detr/detr_shapes.py", device="cpu", opts=["model.num_queries=0"], allow_random_init=True)


def test_predictor_compiles_when_asked_by_argument_or_config():
    from detr_core.compiled import is_compiled_for_inference

    plain = Predictor("configs/detr/detr_shapes.py", device="cpu", allow_random_init=True)
    assert not is_compiled_for_inference(plain.model)
    by_config = Predictor("configs/detr/detr_shapes.py", device="cpu", allow_random_init=True,
                          opts=["train.compile_inference=True"])
    assert is_compiled_for_inference(by_config.model)  # compiled lazily: nothing runs before the first image
    by_argument = Predictor("configs/detr/detr_shapes.py", device="cpu", allow_random_init=True, compile=True)
    assert is_compiled_for_inference(by_argument.model)
    overridden = Predictor("configs/detr/detr_shapes.py", device="cpu", allow_random_init=True, compile=False,
                           opts=["train.compile_inference=True"])
    assert not is_compiled_for_inference(overridden.model)

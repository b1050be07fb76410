"""What the project relies on where detectron2 v0.6 and its main branch differ: public APIs or guarded fallbacks,
so that both behave the same."""
import os

import pytest
import torch
from detectron2.engine import default_argument_parser

import train_net
from detr_core.checkpointer import AtomicCheckpointer


def parse(*argv):
    # random initialisation: a fresh clone has no pretrained shapes backbone (output/shapes_backbone.pth)
    flags = [a for a in argv if a.startswith("--")]
    opts = [a for a in argv if not a.startswith("--")]
    return default_argument_parser().parse_args(["--config-file", "configs/detr/detr_shapes.py", *flags, "train.init_checkpoint=", *opts])


def test_override_keys_are_named_arguments_not_anything_a_kwargs_takes():
    """detectron2 main's ``build_detection_train_loader`` takes ``**kwargs`` (for torch's DataLoader), v0.6 does
    not: on both, a key must be a named argument (of the target or of a base class's ``__init__``)."""
    cfg = train_net.setup(parse("dataloader.train.mapper.use_instance_mask=False"))  # DatasetMapper's argument
    assert cfg.dataloader.train.mapper.use_instance_mask is False
    with pytest.raises(KeyError, match="no key 'dataloader.train.pin_memory'"):
        train_net.setup(parse("dataloader.train.pin_memory=True"))
    with pytest.raises(KeyError, match="no key 'dataloader.train.mapper.use_instance_msk'"):
        train_net.setup(parse("dataloader.train.mapper.use_instance_msk=False"))
    assert train_net.setup(parse("+dataloader.train.pin_memory=True")).dataloader.train.pin_memory is True


def test_checkpointer_tags_only_the_complete_file_without_patching_itself(tmp_path):
    checkpointer = AtomicCheckpointer(torch.nn.Linear(2, 2), str(tmp_path))
    checkpointer.save("model_0000004")
    assert "tag_last_checkpoint" not in vars(checkpointer)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000004.pth")

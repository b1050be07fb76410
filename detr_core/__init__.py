"""Shared machinery of the DETR family and the vanilla DETR baseline (registered as ``DETR``)."""
from . import data
from .attention import MultiheadAttention, ProjectedAttention, multi_head_attention, padding_bias
from .backbone import build_resnet, padding_mask
from .conditional_attention import ConditionalDecoderLayer, ConditionalSelfAttention, conditional_decoder_layers
from .config import add_detr_config, add_detr_family_defaults, base_from_config, criterion_from_node, detr_family_node
from .criterion import SetCriterion
from .detr import DETR
from .matcher import HungarianMatcher
from .meta_arch import DETRMetaArch
from .outputs import DecoderOutput
from .position_encoding import PositionEmbeddingSine, sine_embedding
from .transformer import (
    MLP,
    DETRDecoder,
    DETRDecoderLayer,
    DETRTransformer,
    PostNormDecoderLayer,
    PostNormLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    build_activation,
    inverse_sigmoid,
    xavier_init_,
)

__all__ = [k for k in dir() if not k.startswith("_")]

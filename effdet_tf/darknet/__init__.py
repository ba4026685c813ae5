"""Darknet cfg/weights support: parser, weights reader, generic builder, loader by cfg index.

Public API:
    parse_cfg(path) -> DarknetCfg
    read_header(path) -> WeightsHeader
    plan_layers(cfg, *, input_shape=None, upto=None) -> list[LayerPlan]
    build_darknet_model(cfg, *, input_shape=None, upto=None, outputs=None, name=None)
    load_darknet_weights(model, cfg_path, weights_path, *, upto=None) -> LoadReport
    load_backbone_weights(model, path, cfg_path=None) -> LoadReport | None
"""
from effdet_tf.darknet.builder import build_darknet_model
from effdet_tf.darknet.cfg import DarknetCfg, Section, parse_cfg, parse_cfg_text
from effdet_tf.darknet.layout import ConvSpec, LayerPlan, plan_layers, total_floats
from effdet_tf.darknet.loader import LoadReport, load_backbone_weights, load_darknet_weights
from effdet_tf.darknet.weights import WeightsHeader, read_header

__all__ = [
    "ConvSpec", "DarknetCfg", "LayerPlan", "LoadReport", "Section", "WeightsHeader",
    "build_darknet_model", "load_backbone_weights", "load_darknet_weights", "parse_cfg",
    "parse_cfg_text", "plan_layers", "read_header", "total_floats",
]

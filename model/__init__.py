"""CLIP-ViP model library: the video-text model and its losses (imports nothing from train/ or pipeline/)."""

from model.attention import proxy_guided_attention
from model.clip_vip import CLIPViPConfig, CLIPViPModel, CLIPViPOutput, PickledWeightsError
from model.loss import OCLLoss, clamp_logit_scale_, gather_features, infonce_loss, ocl_loss, parse_variant
from model.xpretrain import XPretrainCheckpointError

__all__ = [
    "CLIPViPConfig", "CLIPViPModel", "CLIPViPOutput", "OCLLoss", "PickledWeightsError",
    "XPretrainCheckpointError", "clamp_logit_scale_", "gather_features", "infonce_loss", "ocl_loss",
    "parse_variant", "proxy_guided_attention",
]

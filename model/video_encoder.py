"""The CLIP-ViP vision tower as functions over a Hugging Face `CLIPVisionModel`'s own modules.

Why functions and not a subclass: the weights stay where `transformers.CLIPModel` puts them (so
any CLIP checkpoint loads unchanged), and the forward is ours, written against the layers' public
sub-modules (patch conv, position embedding, layer norms, q/k/v/out projections, MLP) rather than
Hugging Face's attention internals, which change between releases.

Sequence (DESIGN.md section 1): `[proxy_0 .. proxy_{M-1}, patches(frame 1), .., patches(frame T)]`,
proxy_0 = CLIP's class token, every proxy gets position embedding 0 and no temporal embedding,
every patch its spatial position embedding plus the (interpolated) temporal embedding of its frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.attention import proxy_guided_attention


def interpolate_temporal(table: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`[S, D]` learned temporal table -> `[T, D]`, linear interpolation (align_corners=False, as
    the reference code's `F.interpolate(..., mode="linear")`); unchanged when T == S."""
    if num_frames == table.shape[0]:
        return table
    resized = F.interpolate(table.t().unsqueeze(0), size=num_frames, mode="linear", align_corners=False)
    return resized.squeeze(0).t()


def embed_video(embeddings: nn.Module, extra_proxies: torch.Tensor, temporal_table: torch.Tensor,
                pixel_values: torch.Tensor) -> torch.Tensor:
    """Token embeddings of a video, before CLIP's pre-LayerNorm.

    Args:
        embeddings: a `CLIPVisionEmbeddings` (patch_embedding conv, class_embedding, position_embedding).
        extra_proxies: `[M-1, D]` the new proxies (proxy_0 is `embeddings.class_embedding`).
        temporal_table: `[S, D]` learned temporal embedding, interpolated to T.
        pixel_values: `[B, T, 3, H, W]`, H = W = the model's image size, CLIP-normalised.

    Returns:
        `[B, M + T*P, D]`.
    """
    batch, frames, channels, height, width = pixel_values.shape
    if height != embeddings.image_size or width != embeddings.image_size:
        raise ValueError(f"expected frames of {embeddings.image_size}x{embeddings.image_size} pixels, "
                         f"found {height}x{width}")
    conv = embeddings.patch_embedding
    flat = pixel_values.reshape(batch * frames, channels, height, width).to(dtype=conv.weight.dtype)
    patches = conv(flat).flatten(2).transpose(1, 2)  # [B*T, P, D]
    num_patches, dim = patches.shape[1], patches.shape[2]
    position = embeddings.position_embedding.weight  # [1 + P, D]
    # One [T, P, D] space-time table, so the big [B, T, P, D] tensor sees a single add.
    space_time = position[1:].unsqueeze(0) + interpolate_temporal(temporal_table, frames).unsqueeze(1)
    patches = patches.view(batch, frames, num_patches, dim) + space_time  # [B, T, P, D]
    proxies = torch.cat([embeddings.class_embedding.unsqueeze(0), extra_proxies], dim=0) + position[0]  # [M, D]
    proxies = proxies.unsqueeze(0).expand(batch, -1, -1).to(patches.dtype)
    return torch.cat([proxies, patches.reshape(batch, frames * num_patches, dim)], dim=1)


def proxy_encoder_layer(layer: nn.Module, hidden: torch.Tensor, num_proxies: int, num_frames: int) -> torch.Tensor:
    """One `CLIPEncoderLayer` (pre-LN attention + MLP, CLIP's weights) with proxy-guided attention.

    hidden: `[B, N, D]`, N = M + T*P -> `[B, N, D]`.
    """
    attn = layer.self_attn
    batch, num_tokens, dim = hidden.shape
    heads = attn.num_heads
    head_dim = dim // heads
    normed = layer.layer_norm1(hidden)
    shape = (batch, num_tokens, heads, head_dim)
    attended = proxy_guided_attention(
        attn.q_proj(normed).view(shape), attn.k_proj(normed).view(shape), attn.v_proj(normed).view(shape),
        num_proxies, num_frames,
        dropout_p=attn.dropout if attn.training else 0.0,
        scale=getattr(attn, "scale", head_dim ** -0.5),
    )
    hidden = hidden + attn.out_proj(attended.reshape(batch, num_tokens, dim))
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def video_hidden_states(vision_model: nn.Module, extra_proxies: torch.Tensor, temporal_table: torch.Tensor,
                        pixel_values: torch.Tensor, gradient_checkpointing: bool = False) -> torch.Tensor:
    """Last hidden states of the CLIP-ViP vision tower (before the post-LayerNorm).

    Args:
        vision_model: a `CLIPVisionModel` (embeddings, pre_layrnorm, encoder.layers).
        pixel_values: `[B, T, 3, H, W]`.
        gradient_checkpointing: recompute each layer in the backward (only when grads are on).

    Returns:
        `[B, M + T*P, D]`, proxies first.
    """
    num_frames = pixel_values.shape[1]
    num_proxies = 1 + extra_proxies.shape[0]
    hidden = embed_video(vision_model.embeddings, extra_proxies, temporal_table, pixel_values)
    hidden = vision_model.pre_layrnorm(hidden)
    for layer in vision_model.encoder.layers:
        if gradient_checkpointing and torch.is_grad_enabled():
            hidden = checkpoint(proxy_encoder_layer, layer, hidden, num_proxies, num_frames, use_reentrant=False)
        else:
            hidden = proxy_encoder_layer(layer, hidden, num_proxies, num_frames)
    return hidden

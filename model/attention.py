"""Proxy-guided attention (CLIP-ViP, DESIGN.md section 1).

The token sequence of one video is `[proxy_0 .. proxy_{M-1}, patches(frame 1), .., patches(frame T)]`,
N = M + T*P tokens. The attention pattern is:
- a patch of frame t attends to the M proxies and the P patches of frame t, nothing else;
- a proxy attends to every token.

A dense attention with a boolean mask would cost O(N^2) = O((M + T*P)^2). Here it is two
`scaled_dot_product_attention` calls instead:
- per frame: the P patch queries of frame t against the M + P keys [proxies, frame t], batched as
  B*T independent sequences (the proxies' keys/values are replicated per frame), O(T*(M+P)*P);
- the proxies: M queries against all N keys, O(M*N).

Layout: tensors are token-major `[B, N, heads, head_dim]` (the plain `.view` of a projection's
output), so splitting the patches into frames is a free view, not a copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def proxy_guided_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    num_proxies: int,
    num_frames: int,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of a `[proxies, frame patches...]` sequence with the proxy-guided pattern.

    Args:
        query, key, value: `[B, N, heads, head_dim]`, N = num_proxies + num_frames * P.
        num_proxies: M, the leading proxy tokens (attend to everything).
        num_frames: T; the N - M patch tokens are T frames of P patches each, frame-major.
        dropout_p: attention dropout (pass 0.0 in eval mode).
        scale: softmax scale, default head_dim ** -0.5 (CLIP's).

    Returns:
        `[B, N, heads, head_dim]`, the attention output in the input's token order.
    """
    batch, num_tokens, heads, head_dim = query.shape
    num_patch_tokens = num_tokens - num_proxies
    if num_proxies < 1 or num_frames < 1 or num_patch_tokens % num_frames != 0:
        raise ValueError(
            f"expected N = M + T*P tokens with M >= 1, T >= 1; found N={num_tokens}, "
            f"M={num_proxies}, T={num_frames} ({num_patch_tokens} patch tokens)"
        )
    patches = num_patch_tokens // num_frames
    # split (not slicing) so that the backward concatenates the parts' grads instead of
    # zero-filling and summing full-size tensors.
    proxy_query, frame_query = query.split([num_proxies, num_patch_tokens], dim=1)

    def per_frame(tokens: torch.Tensor) -> torch.Tensor:
        """[B, N, h, d] -> [B*T, h, M+P, d]: each frame's patches preceded by the proxies."""
        proxy_part, frame_part = tokens.split([num_proxies, num_patch_tokens], dim=1)
        proxy_part = proxy_part.unsqueeze(1).expand(batch, num_frames, num_proxies, heads, head_dim)
        frame_part = frame_part.reshape(batch, num_frames, patches, heads, head_dim)
        both = torch.cat([proxy_part, frame_part], dim=2)
        return both.view(batch * num_frames, num_proxies + patches, heads, head_dim).transpose(1, 2)

    # Per-frame part: B*T sequences of P queries over [M proxies + P own patches] keys.
    frame_query = frame_query.reshape(batch * num_frames, patches, heads, head_dim).transpose(1, 2)
    frame_out = F.scaled_dot_product_attention(
        frame_query, per_frame(key), per_frame(value), dropout_p=dropout_p, scale=scale
    )  # [B*T, h, P, d]
    frame_out = frame_out.transpose(1, 2).reshape(batch, num_patch_tokens, heads, head_dim)

    # Proxy part: M queries over all N keys.
    proxy_out = F.scaled_dot_product_attention(
        proxy_query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), dropout_p=dropout_p, scale=scale,
    )  # [B, h, M, d]
    return torch.cat([proxy_out.transpose(1, 2), frame_out], dim=1)

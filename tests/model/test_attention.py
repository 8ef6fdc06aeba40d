"""Proxy-guided attention against a dense masked attention (the oracle lives here, in tests only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.attention import proxy_guided_attention


def oracle_mask(num_proxies: int, num_frames: int, num_patches: int) -> torch.Tensor:
    """`[N, N]` True = may attend, written token by token from DESIGN.md's rule."""
    num_tokens = num_proxies + num_frames * num_patches
    mask = torch.zeros(num_tokens, num_tokens, dtype=torch.bool)
    for query in range(num_tokens):
        for key in range(num_tokens):
            if query < num_proxies or key < num_proxies:
                mask[query, key] = True  # a proxy sees everything; everyone sees the proxies
            else:
                mask[query, key] = (query - num_proxies) // num_patches == (key - num_proxies) // num_patches
    return mask


def dense_oracle(q, k, v, num_proxies, num_frames):
    """Full O(N^2) attention with the boolean mask; `[B, N, h, d]` in and out."""
    num_patches = (q.shape[1] - num_proxies) // num_frames
    mask = oracle_mask(num_proxies, num_frames, num_patches)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def random_qkv(batch, num_proxies, num_frames, num_patches, heads=2, head_dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, num_proxies + num_frames * num_patches, heads, head_dim)
    return [torch.randn(shape, generator=generator, dtype=torch.float32) for _ in range(3)]


@pytest.mark.parametrize("batch,num_frames,num_proxies,num_patches",
                         [(1, 1, 1, 4), (2, 3, 4, 5), (3, 12, 4, 4), (2, 5, 2, 9), (1, 2, 7, 1)])
def test_proxy_guided_attention_equals_dense_masked_oracle(batch, num_frames, num_proxies, num_patches):
    q, k, v = random_qkv(batch, num_proxies, num_frames, num_patches)
    with torch.no_grad():
        fast = proxy_guided_attention(q, k, v, num_proxies, num_frames)
        dense = dense_oracle(q, k, v, num_proxies, num_frames)
    assert fast.shape == q.shape
    torch.testing.assert_close(fast, dense, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch,num_frames,num_proxies,num_patches", [(2, 3, 4, 5), (1, 12, 1, 4), (3, 2, 3, 6)])
def test_proxy_guided_attention_gradients_equal_the_oracle(batch, num_frames, num_proxies, num_patches):
    inputs = random_qkv(batch, num_proxies, num_frames, num_patches, seed=1)
    grad_out = torch.randn_like(inputs[0])
    grads = []
    for attention in (proxy_guided_attention, dense_oracle):
        leaves = [tensor.clone().requires_grad_() for tensor in inputs]
        out = attention(*leaves, num_proxies, num_frames)
        torch.autograd.backward(out, grad_out)
        grads.append([leaf.grad for leaf in leaves])
    for fast, dense in zip(*grads):
        torch.testing.assert_close(fast, dense, atol=1e-5, rtol=0)


def test_frame_patches_depend_on_other_frames_only_through_the_proxies():
    num_proxies, num_frames, num_patches = 2, 4, 3
    q, k, v = (tensor.requires_grad_() for tensor in random_qkv(2, num_proxies, num_frames, num_patches, seed=2))
    out = proxy_guided_attention(q, k, v, num_proxies, num_frames)
    frame = 1
    start = num_proxies + frame * num_patches
    out[:, start:start + num_patches].sum().backward()
    for tensor in (q, k, v):
        grad = tensor.grad.abs().sum(dim=(0, 2, 3))  # [N] per token
        own = torch.zeros_like(grad, dtype=torch.bool)
        own[start:start + num_patches] = True
        others = ~own
        others[:num_proxies] = False
        assert grad[others].max() == 0, "a patch saw another frame's patch"
        assert grad[own].min() > 0
    assert k.grad[:, :num_proxies].abs().sum() > 0 and v.grad[:, :num_proxies].abs().sum() > 0


def test_proxies_attend_to_every_token():
    q, k, v = (tensor.requires_grad_() for tensor in random_qkv(1, 3, 4, 2, seed=3))
    proxy_guided_attention(q, k, v, 3, 4)[:, 0].sum().backward()
    assert (k.grad.abs().sum(dim=(0, 2, 3)) > 0).all()


def test_proxy_guided_attention_refuses_a_ragged_sequence():
    q, k, v = random_qkv(1, 2, 3, 4)
    with pytest.raises(ValueError, match="N = M \\+ T\\*P"):
        proxy_guided_attention(q, k, v, 2, 5)

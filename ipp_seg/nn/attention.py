"""Sparse routing attention: DSSA (Dual Sparse Selection Attention) and STAR-DSSA.

Both take and return [B, C, H, W]. The map is split into S x S regions; each query region
routes to its top-k1 key regions (region-level sparsity), and inside the gathered tokens each
query keeps only its top-k2 scores (token-level sparsity, k2 = max(1, K // 8) of the K
gathered candidates) before the softmax.

The token-level top-k is computed as a threshold: the k2-th largest score of each query is
found, every smaller score is masked to -inf, and one dense softmax + matmul follows. Scores
equal to the k2-th are all kept (a tie rule: tokens of a flat background score alike, and a
query can then keep more than k2 of them; the shipped models were trained so). Memory
is then proportional to the K candidates per query region, not to a per-query copy of the
selected values as a literal gather would need.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Zero-pad H and W (bottom/right) up to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, pad_h, pad_w


def to_regions(x: torch.Tensor, regions_per_side: int) -> torch.Tensor:
    """[B, C, H, W] (H, W multiples of S) -> [B, S*S, tokens_per_region, C]."""
    b, c, h, w = x.shape
    s = regions_per_side
    rh, rw = h // s, w // s
    x = x.reshape(b, c, s, rh, s, rw).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, s * s, rh * rw, c)


def gather_regions(tokens: torch.Tensor, region_index: torch.Tensor) -> torch.Tensor:
    """Gather the routed regions' tokens, per head.

    tokens: [B, heads, R, t, d]; region_index: [B, R, k1] -> [B, heads, R, k1 * t, d].
    """
    b, nh, r, t, d = tokens.shape
    k1 = region_index.shape[-1]
    # One flat row index per (batch, head, query region, routed region): index_select (ONNX
    # Gather) copies whole regions and needs no index broadcast to the tokens' full size.
    offsets = (torch.arange(b * nh, device=tokens.device) * r).reshape(b, nh, 1, 1)
    rows = (region_index.unsqueeze(1) + offsets).reshape(-1)
    gathered = tokens.reshape(b * nh * r, t, d).index_select(0, rows)
    return gathered.reshape(b, nh, r, k1 * t, d)


def token_topk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: int,
                         score_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Attention where each query keeps only its ``keep`` largest scores.

    q: [..., t, d]; k, v: [..., K, d]; score_bias broadcastable to [..., t, K] (added before
    the selection). Returns [..., t, d]. Scores are scaled by 1/sqrt(d).
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if score_bias is not None:
        scores = scores + score_bias
    if keep < scores.shape[-1]:
        # The keep-th largest score per query is the threshold; no gradient flows through it.
        threshold = torch.topk(scores.detach(), keep, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def literal_topk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: int) -> torch.Tensor:
    """Reference for :func:`token_topk_attention` (tests and benchmarks only): every query
    gathers a private copy of its top-``keep`` values, [..., t, keep, d], as a literal reading
    of the paper does. The same result where no score ties the ``keep``-th (this keeps exactly
    ``keep``, the threshold every tie), but memory grows with queries x kept tokens."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    top_scores, top_index = torch.topk(scores, keep, dim=-1)
    d = v.shape[-1]
    per_query_v = v.unsqueeze(-3).expand(*v.shape[:-2], q.shape[-2], v.shape[-2], d)
    selected = torch.gather(per_query_v, -2, top_index.unsqueeze(-1).expand(*top_index.shape, d))
    return (torch.softmax(top_scores, dim=-1).unsqueeze(-1) * selected).sum(dim=-2)


class _RoutedAttentionBase(nn.Module):
    """What DSSA and STAR-DSSA share: q/k/v projection, heads, regions, output projection."""

    def __init__(self, dim: int, region_topk: int, regions_per_side: int = 8, head_dim: int = 32,
                 token_keep_fraction: float = 1 / 8) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"dim {dim} is not a multiple of head_dim {head_dim}")
        self.dim = dim
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.region_topk = region_topk
        self.regions_per_side = regions_per_side
        self.token_keep_fraction = token_keep_fraction
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.local_context = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def tokens_kept(self, candidates: int) -> int:
        """k2: the number of scores each query keeps among ``candidates`` gathered tokens."""
        return max(1, int(candidates * self.token_keep_fraction))

    def _route(self, x, q, k, token_valid=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """From the input map x [B, C, H, W] and the queries and keys q, k [B, heads, R, t, d],
        return region indices [B, R, k1] and an optional differentiable region log-weight
        [B, R, k1] added to the token scores. ``token_valid`` [R, t]: the tokens inside the map,
        where it was padded (None: every one); a region of padding alone is never routed to."""
        raise NotImplementedError

    def _local_term(self, v: torch.Tensor) -> torch.Tensor:
        return self.local_context(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s, nh, hd = self.regions_per_side, self.num_heads, self.head_dim
        qkv = self.qkv(x)
        local = self._local_term(qkv[:, 2 * c:])
        qkv, pad_h, pad_w = _pad_to_multiple(qkv, s)
        hp, wp = qkv.shape[-2:]
        rh, rw = hp // s, wp // s
        # One re-layout for q, k and v together, straight into heads x regions x tokens
        # (data movement, not arithmetic, dominates this block on a CPU).
        qkv = qkv.reshape(b, 3, nh, hd, s, rh, s, rw).permute(1, 0, 2, 4, 6, 5, 7, 3)
        q, k, v = qkv.reshape(3, b, nh, s * s, rh * rw, hd).unbind(0)  # each [B, heads, R, t, d]
        # Which tokens hold the map, where it was padded to the region grid (a map that is not a multiple of S: an
        # input other than 256 px): the padding takes no part in routing or attention. Its zero keys had been
        # routed to, kept by the top-k2 and averaged into the regions' means (a network review).
        token_valid = _tokens_inside(h, w, s, x.device) if pad_h or pad_w else None  # [R, t]
        region_index, region_log_weight = self._route(x, q, k, token_valid)
        k1 = region_index.shape[-1]
        tokens_per_region = rh * rw
        k, v = gather_regions(k, region_index), gather_regions(v, region_index)  # [B, heads, R, K, d]
        bias = None
        if region_log_weight is not None:
            # Every token of a routed region carries its region's log-weight.
            bias = region_log_weight.unsqueeze(-1).expand(-1, -1, -1, tokens_per_region).flatten(-2)
            bias = bias[:, None, :, None, :]  # [B, 1 (heads), R, 1 (queries), K]
        if token_valid is not None:
            key_valid = token_valid[region_index].flatten(-2)  # [B, R, K]
            padding = torch.zeros(key_valid.shape, dtype=q.dtype, device=q.device).masked_fill(~key_valid,
                                                                                              float("-inf"))
            padding = padding[:, None, :, None, :]
            bias = padding if bias is None else bias + padding
        out = token_topk_attention(q, k, v, self.tokens_kept(k1 * tokens_per_region), bias)
        out = out.reshape(b, nh, s, s, rh, rw, hd).permute(0, 1, 6, 2, 4, 3, 5).reshape(b, c, hp, wp)
        return self.proj(out[:, :, :h, :w] + local)


def _tokens_inside(h: int, w: int, regions_per_side: int, device) -> torch.Tensor:
    """[R, t] bool: which tokens of an h x w map padded to the region grid lie inside it."""
    inside = torch.zeros((1, 1, h + (-h) % regions_per_side, w + (-w) % regions_per_side), dtype=torch.bool,
                         device=device)
    inside[..., :h, :w] = True
    return to_regions(inside, regions_per_side)[0, :, :, 0]


def _mean_weights(token_valid: torch.Tensor | None) -> torch.Tensor | None:
    """[1, 1, R, t, 1] weights that average a region's tokens inside the map (None: all of them)."""
    if token_valid is None:
        return None
    inside = token_valid.float()
    return (inside / inside.sum(dim=-1, keepdim=True).clamp(min=1.0))[None, None, :, :, None]


def _unroutable(affinity: torch.Tensor, token_valid: torch.Tensor | None) -> torch.Tensor:
    """``affinity`` [B, R, R] with the key regions of padding alone at -inf (never routed to)."""
    if token_valid is None:
        return affinity
    return affinity.masked_fill(~token_valid.any(dim=-1), float("-inf"))


def region_pooled(tokens: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """[B, heads, R, t, d] -> [B, R, heads * d]: each region's tokens averaged (or summed with
    ``weights`` [B, 1, R, t, 1]), heads merged back into channels."""
    pooled = tokens.mean(dim=3) if weights is None else (weights * tokens).sum(dim=3)
    b, nh, r, d = pooled.shape
    return pooled.permute(0, 2, 1, 3).reshape(b, r, nh * d)


class DualSparseSelectionAttention(_RoutedAttentionBase):
    """DSSA: region routing by mean-pooled query/key affinity (no gradient through routing)."""

    def _route(self, x, q_r, k_r, token_valid=None):
        with torch.no_grad():
            weights = _mean_weights(token_valid)
            region_q = region_pooled(q_r, weights)
            region_k = region_pooled(k_r, weights)
            affinity = _unroutable(region_q @ region_k.transpose(-2, -1), token_valid)  # [B, R, R]
            k1 = min(self.region_topk, affinity.shape[-1])
            region_index = torch.topk(affinity, k1, dim=-1).indices
        return region_index, None


def chebyshev_distance(regions_per_side: int) -> torch.Tensor:
    """[R, R] Chebyshev distance between region grid cells (R = S*S)."""
    s = regions_per_side
    rows = torch.arange(s).repeat_interleave(s)
    cols = torch.arange(s).repeat(s)
    return torch.maximum((rows[:, None] - rows[None, :]).abs(), (cols[:, None] - cols[None, :]).abs()).float()


class StarDSSA(_RoutedAttentionBase):
    """STAR-DSSA: saliency-weighted region pooling, topology-aware routing, gated local context.

    Routing scores = (1 - lambda) * cosine(region q, region k) + lambda * exp(-d_cheb / tau),
    lambda = sigmoid(mix_logit) learnable. Top-k selection has no gradient, so the softmax of
    the kept routing scores enters the token scores as a log-weight per gathered region: the
    saliency branch, lambda and the routing temperature learn through the attention where k1 > 1
    (with one region kept its log-weight is 0 whatever the scores: in such a block they steer the
    routing without learning, weight decay aside).
    """

    def __init__(self, dim: int, region_topk: int, regions_per_side: int = 8, head_dim: int = 32,
                 token_keep_fraction: float = 1 / 8, topology_decay: float = 1.0, se_reduction: int = 4) -> None:
        super().__init__(dim, region_topk, regions_per_side, head_dim, token_keep_fraction)
        self.saliency = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.Conv2d(dim, 1, 1))
        self.mix_logit = nn.Parameter(torch.zeros(()))  # lambda = 0.5 at start
        self.routing_logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.register_buffer("topology_prior",
                             torch.exp(-chebyshev_distance(regions_per_side) / topology_decay), persistent=False)
        hidden = max(8, dim // se_reduction)
        self.context_gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, hidden, 1), nn.ReLU(inplace=True),
                                          nn.Conv2d(hidden, dim, 1), nn.Sigmoid())

    @property
    def topology_weight(self) -> torch.Tensor:
        return torch.sigmoid(self.mix_logit)

    def _local_term(self, v):
        local = self.local_context(v)
        return local * self.context_gate(local)

    def _route(self, x, q_r, k_r, token_valid=None):
        s = self.regions_per_side
        saliency, _, _ = _pad_to_multiple(self.saliency(x), s)
        saliency = to_regions(saliency, s)  # [B, R, t, 1]
        if token_valid is not None:  # padding tokens must not draw weight: they hold no image
            saliency = saliency.masked_fill(~token_valid[..., None], -1e4)
        weights = torch.softmax(saliency, dim=2).unsqueeze(1)  # [B, 1, R, t, 1]
        region_q = F.normalize(region_pooled(q_r, weights), dim=-1)
        region_k = F.normalize(region_pooled(k_r, weights), dim=-1)
        semantic = region_q @ region_k.transpose(-2, -1)  # cosine, [B, R, R]
        lam = self.topology_weight
        mixed = _unroutable((1 - lam) * semantic + lam * self.topology_prior, token_valid)
        k1 = min(self.region_topk, mixed.shape[-1])
        kept, region_index = torch.topk(mixed, k1, dim=-1)
        region_log_weight = torch.log_softmax(kept * self.routing_logit_scale.exp(), dim=-1)
        return region_index, region_log_weight


class MultiHeadSelfAttention(nn.Module):
    """Plain multi-head self-attention over all tokens, for stages whose k1 is "all"."""

    def __init__(self, dim: int, head_dim: int = 32) -> None:
        super().__init__()
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).reshape(b, 3, self.num_heads, self.head_dim, h * w)
        q, k, v = qkv.unbind(1)  # [B, heads, d, N]
        attn = torch.softmax((q.transpose(-2, -1) * self.head_dim ** -0.5) @ k, dim=-1)  # [B, heads, N, N]
        out = (attn @ v.transpose(-2, -1)).transpose(-2, -1).reshape(b, c, h, w)
        return self.proj(out)


class ConvMixer(nn.Module):
    """Control for the ablation: the attention slot filled by a depthwise-separable conv."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.pointwise = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))

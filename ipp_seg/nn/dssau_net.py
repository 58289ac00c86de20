"""DSSAU-Net: a U-shaped encoder-decoder of sparse-attention blocks with a pyramid pooling
module on the deepest features. 3 classes: 0 background, 1 pubic symphysis, 2 fetal head.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import ConvMixer, DualSparseSelectionAttention, MultiHeadSelfAttention, StarDSSA
from .configs import NetworkConfig, get_config


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, H, W] map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalised along the channel axis in place of the usual permute / layer_norm /
        # permute: the same numbers, without two full-map transposes per norm.
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        variance = (centred * centred).mean(dim=1, keepdim=True)
        x = centred * torch.rsqrt(variance + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample during training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def make_attention(kind: str, dim: int, region_topk: int | None, config: NetworkConfig) -> nn.Module:
    if kind == "conv":
        return ConvMixer(dim)
    if region_topk is None:
        return MultiHeadSelfAttention(dim, config.head_dim)
    cls = StarDSSA if kind == "star-dssa" else DualSparseSelectionAttention
    return cls(dim, region_topk, config.regions_per_side, config.head_dim, config.token_keep_fraction)


class AttentionBlock(nn.Module):
    """x + dwconv3x3(x); x + attn(LN(x)); x + MLP(LN(x)), with stochastic depth."""

    def __init__(self, dim: int, attention: nn.Module, mlp_ratio: int = 3, drop_path: float = 0.0) -> None:
        super().__init__()
        self.position = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = LayerNorm2d(dim)
        self.attention = attention
        self.norm2 = LayerNorm2d(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, mlp_ratio * dim, 1), nn.GELU(), nn.Conv2d(mlp_ratio * dim, dim, 1))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.position(x)
        x = x + self.drop_path(self.attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def region_max_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Adaptive max pooling to bins x bins, written out explicitly so that it exports to ONNX
    for any map size (bin i covers [floor(i*H/b), ceil((i+1)*H/b)), as adaptive pooling does).
    Only non-negative integer division is used: ONNX integer Div truncates, it does not floor."""
    h, w = x.shape[-2:]
    rows = []
    for i in range(bins):
        y0, y1 = (i * h) // bins, ((i + 1) * h + bins - 1) // bins
        cols = []
        for j in range(bins):
            x0, x1 = (j * w) // bins, ((j + 1) * w + bins - 1) // bins
            cols.append(x[:, :, y0:y1, x0:x1].amax(dim=(2, 3), keepdim=True))
        rows.append(torch.cat(cols, dim=3))
    return torch.cat(rows, dim=2)


class PyramidPooling(nn.Module):
    """PPM: max-pooled bins 1, 2, 3, 6, each 1x1 conv to ``width``, upsampled, concatenated
    with the input, then 1x1 conv + BN + ReLU."""

    def __init__(self, cin: int, width: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.bins = bins
        self.branches = nn.ModuleList(nn.Conv2d(cin, width, 1) for _ in bins)
        self.fuse = conv_bn_relu(cin + width * len(bins), width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(region_max_pool(x, b)), size=size, mode="bilinear", align_corners=False)
                  for b, branch in zip(self.bins, self.branches)]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class DecoderOutputs(NamedTuple):
    """What one forward pass computes, for training's auxiliary heads."""

    logits: torch.Tensor  # [B, classes, H, W], the network's output
    fused: torch.Tensor  # [B, decoder_width, H/4, W/4], the fused features the head reads
    levels: tuple[torch.Tensor, ...]  # each decoder level's output, coarsest (1/32) first, 1/4 last


class DSSAUNet(nn.Module):
    """Encoder: stem (two stride-2 3x3 convs), 4 stages of attention blocks with stride-2 conv
    downsampling and a LayerNorm on each stage output. PPM on the deepest features. Decoder at
    one width: upsample x2 + projected skip, attention blocks, 1x1 conv; the four decoder levels
    are fused at 1/4 resolution, upsampled x4, and a 3x3 conv gives the class logits. With
    ``config.detail_channels``, a 1x1 conv gives coarse logits at 1/4 resolution instead, and a
    correction from the fused features and a conv branch on the input, both at 1/2 resolution,
    is added before the final x2 upsampling."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        dims, depths = config.dims, config.depths
        d0 = dims[0]
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, d0 // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(d0 // 2),
            nn.GELU(),
            nn.Conv2d(d0 // 2, d0, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(d0),
        )
        total = sum(depths) + sum(config.decoder_depths)
        rates = iter(torch.linspace(0, config.drop_path, total).tolist())

        def stage(dim: int, depth: int, k1: int | None) -> nn.Sequential:
            return nn.Sequential(*(AttentionBlock(dim, make_attention(config.attention, dim, k1, config),
                                                  config.mlp_ratio, next(rates)) for _ in range(depth)))

        self.downsample = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(dims[i + 1]))
            for i in range(len(dims) - 1))
        self.encoder = nn.ModuleList(stage(dims[i], depths[i], config.region_topk[i]) for i in range(len(dims)))
        self.encoder_norms = nn.ModuleList(LayerNorm2d(d) for d in dims)

        width = config.decoder_width
        self.ppm = PyramidPooling(dims[-1], width)
        self.skips = nn.ModuleList(conv_bn_relu(d, width) for d in dims[:-1])
        self.decoder = nn.ModuleList(stage(width, config.decoder_depths[i], config.region_topk[i])
                                     for i in range(len(dims)))
        self.decoder_out = nn.ModuleList(conv_bn_relu(width, width) for _ in dims)
        self.fuse = conv_bn_relu(width * len(dims), width)
        dc = config.detail_channels
        if dc:
            self.detail = nn.Sequential(
                nn.Conv2d(config.in_channels, dc, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(dc), nn.GELU(),
                nn.Conv2d(dc, dc, 3, padding=1, bias=False), nn.BatchNorm2d(dc), nn.GELU(),
            )
            self.refine = nn.Sequential(nn.Conv2d(width + dc, dc, 3, padding=1, bias=False), nn.BatchNorm2d(dc),
                                        nn.GELU())
            # Logits = the coarse ones (1/4 res, upsampled) + a correction from image detail. The
            # correction starts at zero so that a network initialised from a parent without the
            # branch starts from the parent's output (see `adapt_parent_state`), not from noise.
            self.coarse_head = nn.Conv2d(width, config.num_classes, 1)
            self.correction = nn.Conv2d(dc, config.num_classes, 1)
            nn.init.zeros_(self.correction.weight)
            nn.init.zeros_(self.correction.bias)
        else:
            self.head = nn.Conv2d(width, config.num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(x).logits

    def decode(self, x: torch.Tensor) -> DecoderOutputs:
        """Class logits at input resolution, the fused decoder features at 1/4 resolution that
        the head reads, and the output of every decoder level (``decoder_width`` channels
        each): training's auxiliary heads read the last two."""
        size = x.shape[-2:]
        image = x
        x = self.stem(x)
        features = []
        for i, (blocks, norm) in enumerate(zip(self.encoder, self.encoder_norms)):
            if i > 0:
                x = self.downsample[i - 1](x)
            x = norm(blocks(x))
            features.append(x)

        levels = []
        y = self.ppm(features[-1])
        for i in reversed(range(len(features))):
            if i < len(features) - 1:
                skip = features[i]
                y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False) + self.skips[i](skip)
            y = self.decoder_out[i](self.decoder[i](y))
            levels.append(y)

        quarter = levels[-1].shape[-2:]
        fused = self.fuse(torch.cat(
            [F.interpolate(lv, size=quarter, mode="bilinear", align_corners=False) if lv.shape[-2:] != quarter else lv
             for lv in levels], dim=1))
        if self.config.detail_channels:
            detail = self.detail(image)
            half = F.interpolate(fused, size=detail.shape[-2:], mode="bilinear", align_corners=False)
            logits = self.coarse_head(half) + self.correction(self.refine(torch.cat([half, detail], dim=1)))
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        else:
            logits = self.head(F.interpolate(fused, size=size, mode="bilinear", align_corners=False))
        return DecoderOutputs(logits, fused, tuple(levels))


class EndpointHead(nn.Sequential):
    """Training-only auxiliary head: a heatmap (one channel, logits) of the PS's long-axis ends
    from the fused 1/4-resolution decoder features (:meth:`DSSAUNet.decode`). It
    makes the decoder encode the points the angle of progression is measured from; it is not
    part of the network a model ships (the ONNX graph and the shipped weights lack it)."""

    def __init__(self, width: int) -> None:
        super().__init__(conv_bn_relu(width, width), nn.Conv2d(width, 1, 1))


class DeepSupervisionHeads(nn.ModuleList):
    """Training-only auxiliary heads (deep supervision): class logits from each decoder level
    coarser than 1/4 resolution (:meth:`DSSAUNet.decode`), so that the deep levels are taught
    the segmentation directly rather than only through the fused head. Not part of the network
    a model ships (the ONNX graph and the shipped weights lack them)."""

    def __init__(self, width: int, num_classes: int, levels: int) -> None:
        super().__init__(nn.Conv2d(width, num_classes, 1) for _ in range(levels))

    def forward(self, levels: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Logits per coarse level, coarsest first (the last, 1/4-resolution level is skipped)."""
        return [head(level) for head, level in zip(self, levels[:-1])]


def adapt_parent_state(state: dict, config: NetworkConfig) -> dict:
    """A parent's weights (a network without the detail branch) renamed for ``config``'s.

    The parent's 3x3 head ran on features upsampled x4, where neighbouring pixels are nearly
    equal, so its kernel summed over space is the 1x1 kernel that gives nearly the same logits
    on the 1/4-resolution features; a 1x1 conv commutes with the bilinear upsampling, so the
    child starts where the parent was. Other tensors pass unchanged."""
    if not config.detail_channels or "head.weight" not in state:
        return dict(state)
    out = {k: v for k, v in state.items() if not k.startswith("head.")}
    out["coarse_head.weight"] = state["head.weight"].sum(dim=(2, 3), keepdim=True)
    out["coarse_head.bias"] = state["head.bias"]
    return out


def build_network(config: NetworkConfig | str) -> DSSAUNet:
    """Build a DSSAU-Net from a config or a registered config name."""
    if isinstance(config, str):
        config = get_config(config)
    return DSSAUNet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int = 256, width: int = 256) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (convs, matmuls), via torch's
    FLOP counter (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, model.config.in_channels, height, width)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2

"""Network configurations as data, and a registry of them (in the manner of timm).

This module must not import torch: the CLI lists configs (with their parameter counts and
MACs, precomputed and checked by a test against the real modules) without it.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

ATTENTION_KINDS = ("dssa", "star-dssa", "conv")
#: The config ``ipp-seg train`` trains where none is named.
DEFAULT_CONFIG = "dssau-net-s"


@dataclass(frozen=True)
class NetworkConfig:
    """A DSSAU-Net variant.

    ``region_topk`` gives, per stage (shallow to deep), how many key regions each query region
    keeps (k1); ``None`` means "all", i.e. plain multi-head self-attention at that stage.
    ``attention`` is ``"dssa"``, ``"star-dssa"`` (used in every sparse stage) or ``"conv"``
    (a control without attention: the attention is replaced by a depthwise-separable conv).
    """

    # Fields that may differ between a parent checkpoint and the network it initialises
    # (a new head on the same backbone): see :meth:`same_backbone`.
    HEAD_FIELDS = ("name", "detail_channels", "params", "macs_256", "notes")

    name: str
    in_channels: int
    dims: tuple[int, ...]
    depths: tuple[int, ...]
    region_topk: tuple[int | None, ...]
    regions_per_side: int = 8
    decoder_width: int = 64
    decoder_depths: tuple[int, ...] = (2, 2, 8, 2)
    attention: str = "dssa"
    head_dim: int = 32
    mlp_ratio: int = 3
    token_keep_fraction: float = 1 / 8
    drop_path: float = 0.1
    num_classes: int = 3
    # 0: logits from the 1/4-resolution fused features, upsampled x4 (as published). N > 0: a
    # detail branch of N channels from the input at 1/2 resolution refines them first, so that
    # small structures (the PS) get boundaries from image detail, not from interpolation.
    detail_channels: int = 0
    # Reference figures, 256x256 input, batch 1; checked against the modules by a test.
    params: int = 0
    macs_256: int = 0
    notes: str = ""
    class_names: tuple[str, ...] = field(default=("background", "pubic_symphysis", "fetal_head"))

    def __post_init__(self) -> None:
        n = len(self.dims)
        if not (len(self.depths) == len(self.region_topk) == len(self.decoder_depths) == n):
            raise ValueError(f"{self.name}: dims, depths, region_topk and decoder_depths differ in length")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"{self.name}: attention must be one of {ATTENTION_KINDS}")
        for d in (*self.dims, self.decoder_width):
            if d % self.head_dim:
                raise ValueError(f"{self.name}: width {d} is not a multiple of head_dim {self.head_dim}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> NetworkConfig:
        """The config :meth:`to_dict` gave (as a checkpoint stores it: lists for tuples). Fields
        this version does not know are left out; fields it lacks take their defaults.

        Raises:
            ValueError: ``saved`` is no config (a required field missing, or inconsistent)."""
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known}
        try:
            return cls(**values)
        except TypeError as exc:  # a required field missing, or a value of the wrong kind
            missing = sorted(f.name for f in fields(cls) if f.name not in values and f.default is MISSING
                             and f.default_factory is MISSING)
            why = f"it lacks {', '.join(missing)}" if missing else "a field holds a value of the wrong kind"
            raise ValueError(f"not a network config ({why})") from None

    def same_backbone(self, other: dict) -> bool:
        """Whether ``other`` (a config as saved in a checkpoint) has this config's encoder and
        decoder, so that its weights can initialise this network except for the head."""
        mine = {k: v for k, v in asdict(self).items() if k not in self.HEAD_FIELDS}
        theirs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in other.items() if k in mine}
        # A field the parent's config lacks is a mismatch (object() equals nothing), except the
        # class names, which older checkpoints did not record and which never change the weights.
        return all(theirs.get(k, v if k == "class_names" else object()) == v for k, v in mine.items())


_PAPER = dict(
    in_channels=3,
    dims=(96, 192, 384, 768),
    depths=(2, 2, 8, 2),
    region_topk=(1, 4, 16, None),
    regions_per_side=8,
    decoder_width=64,
    decoder_depths=(2, 2, 8, 2),
    drop_path=0.2,
)
# Small configs: sized so that a full CPU training run fits in about two hours on 2 cores.
_SMALL = dict(
    in_channels=1,
    dims=(32, 64, 128, 256),
    depths=(2, 2, 4, 2),
    region_topk=(1, 4, 16, None),
    regions_per_side=8,
    decoder_width=32,
    decoder_depths=(1, 1, 2, 1),
    drop_path=0.05,
)

_REGISTRY: dict[str, NetworkConfig] = {}


def register(config: NetworkConfig) -> NetworkConfig:
    if config.name in _REGISTRY:
        raise ValueError(f"config {config.name!r} registered twice")
    _REGISTRY[config.name] = config
    return config


register(NetworkConfig(name="dssau-net-paper", attention="dssa", params=29_209_907, macs_256=7_226_007_552,
                       notes="DSSAU-Net as published: 3-channel input.", **_PAPER))
register(NetworkConfig(name="star-dssau-net-paper", attention="star-dssa", params=29_924_555,
                       macs_256=7_254_193_152, notes="DSSAU-Net with STAR-DSSA in every sparse stage.",
                       **_PAPER))
register(NetworkConfig(name="dssau-net-s", attention="dssa", params=2_627_347, macs_256=765_429_760,
                       notes="Small DSSAU-Net for CPU training and fast inference.", **_SMALL))
register(NetworkConfig(name="star-dssau-net-s", attention="star-dssa", params=2_677_511,
                       macs_256=772_514_816, notes="Small STAR-DSSA U-Net for CPU training and fast inference.",
                       **_SMALL))
register(NetworkConfig(name="dssau-net-s-hr", attention="dssa", detail_channels=16, params=2_636_086,
                       macs_256=864_520_192,
                       notes="dssau-net-s with a 1/2-resolution detail branch before the head (sharper PS "
                             "boundaries; measured, not shipped).", **_SMALL))
register(NetworkConfig(name="conv-unet-s", attention="conv", params=2_034_483, macs_256=542_674_944,
                       notes="Control: the small U-Net with every attention replaced by a conv.", **_SMALL))


def get_config(name: str) -> NetworkConfig:
    """Return the registered config ``name``; ``KeyError`` lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown network config {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def list_configs() -> list[NetworkConfig]:
    return list(_REGISTRY.values())

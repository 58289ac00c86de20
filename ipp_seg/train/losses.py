"""Segmentation losses: cross-entropy plus a soft (differentiable) Dice over PS and FH."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, classes: tuple[int, ...] = (1, 2),
                   class_weights: tuple[float, ...] | None = None, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, averaged over ``classes`` (weighted), computed per image then averaged.

    logits [B, K, H, W]; labels [B, H, W] integer. Uses the softmax probabilities, so the loss
    has a gradient with respect to every logit.
    """
    probs = torch.softmax(logits.float(), dim=1)
    losses = []
    for c in classes:
        p = probs[:, c]
        t = (labels == c).float()
        inter = (p * t).sum(dim=(1, 2))
        denom = p.sum(dim=(1, 2)) + t.sum(dim=(1, 2))
        losses.append(1 - (2 * inter + eps) / (denom + eps))
    stacked = torch.stack(losses, dim=1)  # [B, classes]
    w = torch.tensor(class_weights or [1.0] * len(classes), dtype=stacked.dtype, device=stacked.device)
    return (stacked * w).sum(dim=1).mean() / w.sum()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, dice_weight: float = 1.0,
                      ce_class_weights: tuple[float, ...] | None = None,
                      dice_class_weights: tuple[float, ...] | None = None) -> torch.Tensor:
    """Cross-entropy + ``dice_weight`` x soft Dice over PS (1) and FH (2)."""
    weight = None
    if ce_class_weights is not None:
        weight = torch.tensor(ce_class_weights, dtype=torch.float32, device=logits.device)
    ce = F.cross_entropy(logits.float(), labels.long(), weight=weight)
    return ce + dice_weight * soft_dice_loss(logits, labels, class_weights=dice_class_weights)

"""Segmentation losses: cross-entropy plus a soft (differentiable) Dice over PS and FH; optional
shape and boundary-distance terms on the pubic symphysis and an auxiliary PS end-point heatmap
term, all aimed at the angle of progression; and deep supervision of the coarse decoder levels."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ipp_seg.measure import geometry as geo


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


def shape_moment_loss(logits: torch.Tensor, labels: torch.Tensor, label: int = 1, floor: float = 0.05,
                      min_area_px: int = 30, cap: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """How far the predicted structure's centroid and second moments are from the truth's.

    The AoP hangs on the PS's long axis and its inferior end, i.e. on the centroid and the
    covariance of the PS region (an ellipse's axes and ends follow from them), and a few
    boundary pixels, which Dice barely weighs, swing them. From the softmax probability of
    ``label`` (a soft region) and the true mask, both in coordinates scaled to [0, 1]:
    ``|mu_p - mu_t|^2 / s + ||Sigma_p - Sigma_t||_F / s`` with ``s = trace(Sigma_t)``, the
    true structure's size, so the term is unitless and scale-free. Probabilities below
    ``floor`` count as 0: the faint probability a network leaves on every background pixel
    would otherwise add up, over the whole frame, to a spread that swamps the moments of a
    small structure. Only images whose true structure has at least ``min_area_px`` pixels
    count (augmentation can crop the PS to a sliver, whose tiny size would blow the scaled
    term up), and each image's term is capped at ``cap`` so that one gross error cannot drown
    a batch (cross-entropy and Dice still act on it). 0 when no image counts.
    """
    probs = torch.softmax(logits.float(), dim=1)[:, label]
    probs = torch.where(probs > floor, probs, torch.zeros_like(probs))
    truth = (labels == label).float()
    h, w = truth.shape[-2:]
    ys = (torch.arange(h, device=logits.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=logits.device, dtype=torch.float32) + 0.5) / w
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")

    def moments(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mass = weights.sum(dim=(1, 2)) + eps
        mx = (weights * grid_x).sum(dim=(1, 2)) / mass
        my = (weights * grid_y).sum(dim=(1, 2)) / mass
        dx, dy = grid_x - mx[:, None, None], grid_y - my[:, None, None]
        cxx = (weights * dx * dx).sum(dim=(1, 2)) / mass
        cyy = (weights * dy * dy).sum(dim=(1, 2)) / mass
        cxy = (weights * dx * dy).sum(dim=(1, 2)) / mass
        return torch.stack([mx, my], 1), torch.stack([cxx, cyy, cxy], 1)

    mu_p, cov_p = moments(probs)
    mu_t, cov_t = moments(truth)
    present = truth.sum(dim=(1, 2)) >= min_area_px
    if not bool(present.any()):
        return logits.sum() * 0.0
    size = cov_t[:, 0] + cov_t[:, 1] + eps
    centroid = ((mu_p - mu_t) ** 2).sum(1) / size
    d = cov_p - cov_t
    covariance = torch.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2 + 2 * d[:, 2] ** 2 + 1e-12) / size  # Frobenius norm
    return torch.clamp(centroid + covariance, max=cap)[present].mean()


def signed_distance_px(truth: np.ndarray) -> np.ndarray:
    """Signed Euclidean distance (px, float32) of every pixel to a binary structure: the distance
    to the nearest structure pixel outside it (>= 1), minus the distance to the nearest
    background pixel inside it (<= -1)."""
    inside = np.ascontiguousarray(truth, dtype=np.uint8)
    outside = cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (outside - depth).astype(np.float32)


def boundary_distance_loss(logits: torch.Tensor, labels: torch.Tensor, label: int = 1,
                           min_area_px: int = 30) -> torch.Tensor:
    """How far from the true structure the predicted probability of ``label`` lies, in pixels.

    The boundary loss of Kervadec et al. (MIDL 2019): the softmax probability weighted by the
    signed distance to the true structure (:func:`signed_distance_px`), less the same sum for
    the true mask, which is its minimum over all probability maps, divided by the true area.
    So it is 0 for a perfect prediction and grows with the distance of every misplaced pixel:
    a PS painted on a neighbouring bright structure 15 px away costs about 15 per pixel moved,
    where Dice and cross-entropy charge a misplaced pixel the same whatever its distance. The
    angle of progression hangs on where the PS is, hence the term. Images whose true structure
    has fewer than ``min_area_px`` pixels (cropped away by augmentation) do not count; 0 when
    none counts.
    """
    truth = (labels == label).cpu().numpy()
    areas = truth.sum(axis=(1, 2))
    keep = [i for i, a in enumerate(areas) if a >= min_area_px]
    if not keep:
        return logits.sum() * 0.0
    distance = torch.from_numpy(np.stack([signed_distance_px(truth[i]) for i in keep])).to(logits.device)
    probs = torch.softmax(logits[keep].float(), dim=1)[:, label]
    floor = (distance * torch.from_numpy(truth[keep]).to(logits.device)).sum(dim=(1, 2))
    area = torch.as_tensor(areas[keep], dtype=torch.float32, device=logits.device)
    return (((probs * distance).sum(dim=(1, 2)) - floor) / area).mean()


def ps_axis_ends(labels: np.ndarray, label: int = 1, min_area_px: int = 30) -> np.ndarray | None:
    """The two ends of the PS's long axis, (2, 2) pixel (x, y), unordered, or None.

    The same ellipse the default AoP method fits (``cv2.fitEllipse`` on the sub-pixel boundary
    of the largest component), so an auxiliary head learns the points the angle is measured
    from. None when the structure is missing or smaller than ``min_area_px`` (augmentation can
    crop it to a sliver whose axis means nothing)."""
    binary = (np.asarray(labels) == label).astype(np.uint8)
    n, components, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < min_area_px:
        return None
    ellipse = geo.fit_ellipse(geo.boundary_points(components == largest))
    if ellipse is None:
        return None
    return np.stack(ellipse.major_axis_ends())


def endpoint_heatmap_loss(heatmap_logits: torch.Tensor, ends: list[np.ndarray | None], image_size: tuple[int, int],
                          sigma_px: float = 4.0) -> torch.Tensor:
    """KL divergence from the predicted spatial distribution to the true one of the PS's axis ends.

    ``heatmap_logits`` [B, 1, h, w] (any resolution) is read as one distribution over pixels
    (a softmax over the whole map); the truth is two equal Gaussians of ``sigma_px`` (input
    pixels) at the ends from :func:`ps_axis_ends`, in input pixel coordinates of an image of
    ``image_size`` (H, W). Unordered ends need no rule for which one is inferior, so mirrored
    training frames are consistent. A distribution, not per-pixel targets, keeps the term
    scale-free (0 for a perfect map, ~log(h*w) for a flat one) whatever the resolution. Images
    without ends do not count; 0 when none has them."""
    h, w = heatmap_logits.shape[-2:]
    keep = [i for i, e in enumerate(ends) if e is not None]
    if not keep:
        return heatmap_logits.sum() * 0.0
    sy, sx = image_size[0] / h, image_size[1] / w
    # Map-cell centres in input pixel coordinates.
    ys = (torch.arange(h, dtype=torch.float32, device=heatmap_logits.device) + 0.5) * sy - 0.5
    xs = (torch.arange(w, dtype=torch.float32, device=heatmap_logits.device) + 0.5) * sx - 0.5
    pts = torch.as_tensor(np.stack([ends[i] for i in keep]), dtype=torch.float32, device=heatmap_logits.device)
    dx = xs[None, None, None, :] - pts[:, :, 0, None, None]  # [K, 2, 1, w]
    dy = ys[None, None, :, None] - pts[:, :, 1, None, None]  # [K, 2, h, 1]
    target = torch.exp(-(dx ** 2 + dy ** 2) / (2 * sigma_px ** 2)).sum(dim=1).flatten(1)  # [K, h*w]
    target = target / target.sum(dim=1, keepdim=True).clamp_min(1e-12)
    log_pred = torch.log_softmax(heatmap_logits[keep].float().flatten(1), dim=1)
    kl = (target * (torch.log(target.clamp_min(1e-12)) - log_pred)).sum(dim=1)
    return kl.mean()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, dice_weight: float = 1.0,
                      ce_class_weights: tuple[float, ...] | None = None,
                      dice_class_weights: tuple[float, ...] | None = None,
                      shape_weight: float = 0.0, boundary_weight: float = 0.0) -> torch.Tensor:
    """Cross-entropy + ``dice_weight`` x soft Dice over PS (1) and FH (2) + ``shape_weight``
    x :func:`shape_moment_loss` of the PS + ``boundary_weight`` x its
    :func:`boundary_distance_loss`."""
    weight = None
    if ce_class_weights is not None:
        weight = torch.tensor(ce_class_weights, dtype=torch.float32, device=logits.device)
    ce = F.cross_entropy(logits.float(), labels.long(), weight=weight)
    loss = ce + dice_weight * soft_dice_loss(logits, labels, class_weights=dice_class_weights)
    if shape_weight:
        loss = loss + shape_weight * shape_moment_loss(logits, labels, label=1)
    if boundary_weight:
        loss = loss + boundary_weight * boundary_distance_loss(logits, labels, label=1)
    return loss


def deep_supervision_loss(level_logits: list[torch.Tensor], labels: torch.Tensor, dice_weight: float = 1.0,
                          ce_class_weights: tuple[float, ...] | None = None,
                          dice_class_weights: tuple[float, ...] | None = None) -> torch.Tensor:
    """Cross-entropy + soft Dice (:func:`segmentation_loss` without the shape term) of each
    coarse level's logits, coarsest first, resized (bilinear) to the labels' grid, weighted
    1, 2, 4, ... from the coarsest level to the finest and normalised to sum to 1, as
    nnU-Net weighs its deep supervision: the finer a level, the more its map should already
    look like the answer."""
    if not level_logits:
        raise ValueError("deep supervision needs at least one decoder level")
    weights = [2.0 ** i for i in range(len(level_logits))]
    total = sum(weights)
    loss = level_logits[0].new_zeros((), dtype=torch.float32)
    for w, logits in zip(weights, level_logits):
        resized = F.interpolate(logits.float(), size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=False)
        loss = loss + (w / total) * segmentation_loss(resized, labels, dice_weight, ce_class_weights,
                                                      dice_class_weights)
    return loss

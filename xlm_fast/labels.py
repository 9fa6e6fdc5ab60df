"""Checks of the heads' label arguments: shape, dtype and class range, so that bad labels
raise a ValueError/TypeError naming the argument instead of a raw IndexError or CUDA
assert from inside the loss. One value check per argument (aminmax: one device sync,
only when labels are given)."""

import torch

IGNORE_INDEX = -100  # cross-entropy's default: transformers' collators pad labels with it


def check_integer_labels(name, labels, expected_numel, num_classes, what, ignore_index=IGNORE_INDEX):
    """Integer `labels` with `expected_numel` values, each in [0, num_classes) or
    `ignore_index` (None: no ignored value)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class ids, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class ids ({what}), got dtype {labels.dtype}")
    if labels.numel() != expected_numel:
        raise ValueError(f"{name} must hold {expected_numel} values ({what}), got shape {tuple(labels.shape)}")
    if labels.numel() == 0:
        return
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        valid |= labels == ignore_index
    if not bool(valid.all()):
        low, high = torch.aminmax(labels)
        allowed = f"[0, {num_classes})" + ("" if ignore_index is None else f" or {ignore_index}")
        raise ValueError(f"{name} must be in {allowed} ({what}), got values from {int(low)} to {int(high)}")


def check_float_labels(name, labels, expected_numel, what):
    """Floating-point targets (regression, multi-label) with `expected_numel` values."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if not labels.is_floating_point():
        raise TypeError(f"{name} must be floating point ({what}), got dtype {labels.dtype}")
    if labels.numel() != expected_numel:
        raise ValueError(f"{name} must hold {expected_numel} values ({what}), got shape {tuple(labels.shape)}")


def check_positions(name, positions, batch):
    """QA positions: integers, one per row ((batch,) or (batch, 1)). Out-of-range values
    are kept: the heads clamp them to an ignored index, as transformers does."""
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token positions, got {type(positions).__name__}")
    if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token positions, got dtype {positions.dtype}")
    if positions.numel() != batch or positions.dim() > 2:
        raise ValueError(f"{name} must have shape ({batch},) or ({batch}, 1), got {tuple(positions.shape)}")

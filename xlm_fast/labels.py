"""Checks of the heads' label arguments: shape, dtype and class range, so that bad labels
raise a ValueError/TypeError naming the argument instead of a raw IndexError or CUDA
assert from inside the loss. Shapes and dtypes cost nothing; the class ranges of all the
arguments of one call are checked together, with one device sync, and only when labels
are given."""

import torch

IGNORE_INDEX = -100  # cross-entropy's default: transformers' collators pad labels with it


def _shapes_text(shapes):
    return " or ".join(str(shape) for shape in shapes)


def check_class_ids(name, labels, shapes, what):
    """Integer `labels` of one of `shapes` (tuples), returned as int64, the dtype the
    losses and gather take (int32 ids are accepted and converted)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor ({what}), got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers ({what}), got dtype {labels.dtype}")
    if tuple(labels.shape) not in shapes:
        raise ValueError(f"{name} must have shape {_shapes_text(shapes)} ({what}), got {tuple(labels.shape)}")
    return labels.long()


def check_float_targets(name, labels, shapes, what):
    """Floating-point targets (regression, multi-label, is_impossible) of one of `shapes`."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor ({what}), got {type(labels).__name__}")
    if not labels.is_floating_point():
        raise TypeError(f"{name} must be floating point ({what}), got dtype {labels.dtype}")
    if tuple(labels.shape) not in shapes:
        raise ValueError(f"{name} must have shape {_shapes_text(shapes)} ({what}), got {tuple(labels.shape)}")
    return labels


def check_class_id_values(*specs):
    """specs: (name, int64 labels, num_classes, ignore_index or None). ValueError naming
    the first argument with a value outside [0, num_classes) other than ignore_index."""
    specs = [spec for spec in specs if spec[1].numel()]
    if not specs:
        return
    valid = []
    for _, labels, num_classes, ignore_index in specs:
        inside = (labels >= 0) & (labels < num_classes)
        if ignore_index is not None:
            inside |= labels == ignore_index
        valid.append(inside.all())
    for (name, labels, num_classes, ignore_index), ok in zip(specs, torch.stack(valid).tolist()):
        if not ok:
            low, high = torch.aminmax(labels)
            allowed = f"[0, {num_classes})" + ("" if ignore_index is None else f" or {ignore_index}")
            raise ValueError(f"{name} values must be in {allowed}, got values from {int(low)} to {int(high)}")

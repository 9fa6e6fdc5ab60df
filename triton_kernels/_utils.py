"""Helpers shared by the kernel files: interpreter detection and dtype checks."""
import os

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_floating(name: str, tensor: torch.Tensor) -> None:
    """Raises TypeError unless `tensor` is a tensor in fp16, bf16 or fp32."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {tensor.dtype}")


def check_same_device(**tensors: torch.Tensor) -> None:
    """Raises ValueError when the given (non-None) tensors live on different devices."""
    present = {name: t for name, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{name} on {t.device}" for name, t in present.items())
        raise ValueError(f"all tensors must be on one device, got {listing}")


def row_mask_for_kernel(name: str, row_mask: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Flattens a (batch, seq) or (rows,) padding mask to (rows,) for a kernel to read.

    bool masks are viewed as uint8 (no copy); the kernels convert to fp32 on load.
    """
    if not isinstance(row_mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(row_mask).__name__}")
    if row_mask.numel() != n_rows:
        raise ValueError(f"{name} must have one value per row ({n_rows}), got shape {tuple(row_mask.shape)}")
    flat = row_mask.reshape(n_rows)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    return flat.contiguous()

"""Helpers shared by the kernel files: interpreter detection and dtype checks."""
import os

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _major_minor(version: str) -> tuple:
    return tuple(int(part) for part in version.split(".")[:2])


def check_interpreter_supported() -> None:
    """Triton's interpreter before 3.8 turns loop bounds into Python ints in a way that
    numpy 2.4 rejects ("only 0-dimensional arrays can be converted to Python scalars"),
    so every kernel would fail with that; raise one clear error instead."""
    import numpy
    import triton

    if _major_minor(triton.__version__) < (3, 8) and _major_minor(numpy.__version__) >= (2, 4):
        raise RuntimeError(
            f"TRITON_INTERPRET=1 with triton {triton.__version__} needs numpy < 2.4 (found "
            f"{numpy.__version__}): install triton >= 3.8 or numpy < 2.4"
        )


def _interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1); raises
    if this triton's interpreter cannot run them (check_interpreter_supported)."""
    enabled = _interpreter_enabled()
    if enabled:
        check_interpreter_supported()
    return enabled


def tma_supported(device: torch.device) -> bool:
    """Whether kernels on `device` can use TMA tensor descriptors: CUDA devices of
    compute capability 9.0 (Hopper) or newer, and the interpreter, which emulates them."""
    if _interpreter_enabled():
        return True
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


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


def persistent_grid_size(device: torch.device) -> int:
    """Programs of a persistent kernel: one per multiprocessor; 3 under the
    interpreter, so that programs loop over several tiles there too."""
    if _interpreter_enabled():
        return 3
    return torch.cuda.get_device_properties(device).multi_processor_count

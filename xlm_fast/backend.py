"""The one place that decides, per call, between the fused Triton path and the PyTorch
path of XLMModel's encoder.

XLM_FAST_BACKEND=torch|triton|auto (default auto):
  auto    Triton for CUDA tensors when triton imports and the call is covered.
  triton  Triton whenever the call is covered, also on CPU tensors under
          TRITON_INTERPRET=1 (how CI checks the kernels without a GPU).
  torch   always the PyTorch path.
Inference and training are covered (every kernel has its backward and draws its
dropout itself), under torch.autocast too (the encoder then runs in autocast's dtype:
`compute_dtype`). Calls the kernels do not cover take the PyTorch path:
output_attentions=True, a decoding cache, dtypes other than fp16/bf16/fp32 (float64
references, say), a dropout probability of 1 (XLM then zeroes the values), and a layer
whose heads were all pruned (its attention output is out_lin's bias alone). Layers
pruned to different head counts are covered: each layer's fused QKV and attention take
its own heads.
"""

import functools
import os

import torch

BACKEND_ENV = "XLM_FAST_BACKEND"
BACKEND_CHOICES = ("auto", "triton", "torch")
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def requested_backend():
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"{BACKEND_ENV} must be one of {BACKEND_CHOICES}, got {choice!r}")
    return choice


def interpreter_enabled():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def triton_importable():
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_runs_on(device):
    """Whether the Triton kernels can run on tensors of `device`."""
    return triton_importable() and (device.type == "cuda" or interpreter_enabled())


def compute_dtype(device, weight_dtype):
    """The dtype the fused encoder computes in on `device`: torch.autocast's when it is on
    for that device (the whole encoder runs in it, see fused_encoder), else the weights'."""
    try:
        enabled = torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4 takes no device type
        enabled = torch.is_autocast_cpu_enabled() if device.type == "cpu" else torch.is_autocast_enabled()
    if not enabled:
        return weight_dtype
    if hasattr(torch, "get_autocast_dtype"):
        return torch.get_autocast_dtype(device.type)
    return torch.get_autocast_cpu_dtype() if device.type == "cpu" else torch.get_autocast_gpu_dtype()


def select_backend(device, *, dtype, output_attentions, uses_cache, dropout, headless_layers=False):
    """Returns "triton" or "torch" for one encoder call on tensors of `device` and
    floating-point `dtype` (None when the inputs' dtype differs from the weights');
    dropout: the largest dropout probability the call applies (0 outside training);
    headless_layers: some layer has no attention head left after prune_heads."""
    choice = requested_backend()
    uncovered = (dtype not in KERNEL_DTYPES or compute_dtype(device, dtype) not in KERNEL_DTYPES
                 or output_attentions or uses_cache or dropout >= 1 or headless_layers)
    if choice == "torch" or uncovered:
        return "torch"
    if choice == "triton":
        if not triton_runs_on(device):
            raise RuntimeError(
                f"{BACKEND_ENV}=triton but the Triton kernels cannot run on {device}: "
                "triton must be installed, and CPU tensors need TRITON_INTERPRET=1"
            )
        return "triton"
    return "triton" if device.type == "cuda" and triton_importable() else "torch"

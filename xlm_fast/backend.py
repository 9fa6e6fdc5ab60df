"""The one place that decides, per call, between the fused Triton path and the PyTorch
path of XLMModel's encoder.

XLM_FAST_BACKEND=torch|triton|auto (default auto):
  auto    Triton for CUDA tensors when triton imports and the call is covered.
  triton  Triton whenever the call is covered, also on CPU tensors under
          TRITON_INTERPRET=1 (how CI checks the kernels without a GPU).
  torch   always the PyTorch path.
Calls the kernels do not cover take the PyTorch path: output_attentions=True, a
decoding cache, gradients, and training with dropout (no backward/dropout kernels yet).
"""

import functools
import os

BACKEND_ENV = "XLM_FAST_BACKEND"
BACKEND_CHOICES = ("auto", "triton", "torch")


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


def select_backend(device, *, output_attentions, uses_cache, needs_grad, dropout_active):
    """Returns "triton" or "torch" for one encoder call on tensors of `device`."""
    choice = requested_backend()
    if choice == "torch" or output_attentions or uses_cache or needs_grad or dropout_active:
        return "torch"
    if choice == "triton":
        if not triton_runs_on(device):
            raise RuntimeError(
                f"{BACKEND_ENV}=triton but the Triton kernels cannot run on {device}: "
                "triton must be installed, and CPU tensors need TRITON_INTERPRET=1"
            )
        return "triton"
    return "triton" if device.type == "cuda" and triton_importable() else "torch"


def triton_encoder_forward(model, *, inputs, position_ids, langs, token_type_ids, padding_mask,
                           lengths, head_mask, output_hidden_states):
    """Fused forward of XLMModel's embeddings and layers.

    model          XLMModel (HF parameter names)
    inputs         (batch, seq) token ids, or (batch, seq, dim) embeddings
    position_ids   (batch or 1, seq) int64
    langs          (batch, seq) int64 or None (None also when the model has no lang embeddings)
    token_type_ids (batch, seq) int64 or None
    padding_mask   (batch, seq) bool: True for real tokens (key mask when not causal, row mask always)
    lengths        (batch,) int64 when padding_mask is the prefix mask of these lengths, else None
    head_mask      (n_layers, n_heads) float or None
    Returns (last_hidden_state, hidden_states tuple or None).
    """
    raise NotImplementedError("the fused Triton encoder is not implemented yet")

"""Dropout inside the fused kernels: one counter-based random stream (Philox, tl.rand).

A kernel that drops values takes a `seed` (drawn once per call by `philox_seed` from
torch's CPU generator, so torch.manual_seed reproduces a run, and torch.utils.checkpoint,
which restores that generator, recomputes the same mask) and gives each element of the
tensor it drops an int64 `offset`: its row-major index in that tensor's logical shape
(e.g. (batch, heads, query, key) for attention probabilities). Element `offset` is kept
when `keep(seed, offset, p)`; kept values are scaled by 1 / (1 - p) (inverted dropout,
as torch.nn.functional.dropout). The backward regenerates the mask from the same seed
and offsets instead of storing it.

`keep_mask` materialises the mask of a whole tensor: the reference the kernels' tests
compare against.
"""
import torch
import triton
import triton.language as tl

SEED_RANGE = 2 ** 62  # seeds are int64 kernel arguments; Philox takes them as 64 bits


def philox_seed(generator: torch.Generator = None) -> int:
    """A fresh seed from `generator` (torch's default CPU generator when None). CPU, so
    no device synchronisation."""
    return int(torch.randint(SEED_RANGE, (1,), generator=generator).item())


@triton.jit
def keep(seed, offsets, p):
    """Block of booleans: which elements at int64 `offsets` dropout with probability
    `p` keeps (uniform [0, 1) draws >= p)."""
    return tl.rand(seed, offsets) >= p


@triton.jit
def _keep_mask_kernel(mask_ptr, seed, p, n_elements, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(mask_ptr + offsets, keep(seed, offsets, p), mask=offsets < n_elements)


def keep_mask(seed: int, shape, p: float, device) -> torch.Tensor:
    """bool tensor of `shape`: True where a kernel dropping a tensor of that logical
    shape with (seed, p) keeps the element."""
    mask = torch.empty(shape, dtype=torch.bool, device=device)
    block = 1024
    _keep_mask_kernel[(triton.cdiv(mask.numel(), block),)](mask, seed, p, mask.numel(), BLOCK=block)
    return mask


def check_dropout_p(name: str, p) -> float:
    """p as a float, or ValueError naming the argument unless 0 <= p < 1 (p == 1 would
    scale by infinity; a caller dropping everything passes zeros instead)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {p!r}")
    return float(p)

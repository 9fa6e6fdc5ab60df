"""triton_kernels/_utils.py: the interpreter compatibility check."""
import numpy
import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")
from xlm_fast.triton_kernels._utils import check_interpreter_supported  # noqa: E402
from xlm_fast.triton_kernels.layer_norm import add_layer_norm  # noqa: E402


def test_interpreter_with_old_triton_and_new_numpy_is_one_clear_error(monkeypatch):
    """triton < 3.8's interpreter fails on numpy >= 2.4 deep inside every kernel; the
    wrappers say so up front, naming both versions and the way out."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(numpy, "__version__", "2.4.6")
    x = torch.randn(3, 8)
    with pytest.raises(RuntimeError, match=r"triton 3\.6\.0 needs numpy < 2\.4 \(found 2\.4\.6\)"):
        add_layer_norm(x, None, torch.ones(8), torch.zeros(8), 1e-5)
    monkeypatch.setattr(numpy, "__version__", "2.3.5")  # supported pairs pass
    check_interpreter_supported()
    monkeypatch.setattr(triton, "__version__", "3.9.0")
    monkeypatch.setattr(numpy, "__version__", "2.4.6")
    check_interpreter_supported()

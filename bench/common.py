"""Shared by the benchmark scripts: CUDA check, timing, device description, and
writing results as JSON rows + a markdown table."""
import json
import os
import sys

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run as `python bench/x.py` without installing: import triton_kernels
    sys.path.insert(0, REPO_ROOT)


def require_cuda_or_exit(script: str) -> None:
    """Benchmarks measure GPU speed: without CUDA (or triton) print why and exit 0."""
    if not torch.cuda.is_available():
        print(f"{script}: CUDA is not available on this machine; the benchmark needs an NVIDIA GPU. Nothing measured.")
        sys.exit(0)
    try:
        import triton  # noqa: F401
    except ImportError:
        print(f"{script}: triton is not installed; nothing measured.")
        sys.exit(0)


def median_ms(fn) -> float:
    """Median time of fn() in milliseconds (triton.testing.do_bench: warm-up, L2 flush)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=200, return_mode="median")


def device_description() -> dict:
    import triton

    return {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
    }


def write_results(out_dir: str, stem: str, rows: list, columns: list, title: str) -> None:
    """Writes rows to out_dir/stem.json and a markdown table of `columns` to out_dir/stem.md."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{stem}.json"), "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=1)

    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    lines = [f"# {title}", ""]
    if rows:
        device = {key: rows[0].get(key) for key in ("device", "torch", "triton", "cuda")}
        lines += [", ".join(f"{k}: {v}" for k, v in device.items()), ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    with open(os.path.join(out_dir, f"{stem}.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))

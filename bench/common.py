"""Shared by the benchmark scripts: CUDA check, timing, device description, swapping
a module attribute for a run, and writing results as JSON rows + a markdown table."""
import contextlib
import json
import os
import sys

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `python bench/x.py` imports this checkout's xlm_fast (its kernels through the editable install)
if REPO_ROOT not in sys.path:
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


def benchmark_on_cuda(benchmark, fn) -> None:
    """A pytest-benchmark case of fn that waits for the GPU to finish each call."""

    def synchronized():
        fn()
        torch.cuda.synchronize()

    benchmark(synchronized)


@contextlib.contextmanager
def patched(module, name, value):
    """module.name is value inside the block (a launch configuration, a kernel choice)."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def with_patch(module, name, value, fn):
    """fn, run with module.name set to value for each call."""

    def run():
        with patched(module, name, value):
            return fn()

    return run


def time_configuration(row, fn, flops, error_of) -> dict:
    """Fills row with error_of(fn()), fn's median ms and TFLOP/s; a configuration that
    cannot run (out of shared memory, say) gets its error recorded instead."""
    try:
        row["error_vs_reference"] = error_of(fn())
        row["ms"] = median_ms(fn)
        row["tflops"] = flops / row["ms"] / 1e9
    except Exception as error:  # noqa: BLE001 - recorded in the table, the sweep goes on
        row["error"] = f"{type(error).__name__}: {str(error)[:80]}"
    return row


def device_description() -> dict:
    import triton

    return {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
    }


def cpu_description() -> str:
    """'<CPU model>, <n> cores, Python <version>' for the CPU benchmarks' tables."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count() or 1} cores, Python {platform.python_version()}"


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

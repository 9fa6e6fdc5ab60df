"""Compiles, on a machine without a GPU, every Triton kernel specialisation that the
kernel tests launch, for an H100 (sm_90a), and reports registers, spills, shared
memory and wgmma use per specialisation. A compile error, or shared memory over the
H100's 227 KB per block, fails the run (exit 1): both would otherwise first show on
the GPU.

`python bench/sm90_compile_report.py [--out-dir DIR] [--stem STEM] [TEST FILES...]`
  1. runs the tests (default: the kernel and backend tests) in a subprocess under
     TRITON_INTERPRET=1 where each kernel launch is recorded, not executed, with the
     launch configuration the kernels choose on a GPU (the interpreter's small tiles
     are switched off); the tests' own assertions fail there and are ignored;
  2. compiles each distinct specialisation with triton.compile for
     GPUTarget("cuda", 90, 32), with the 16-divisibility hints a real launch would get,
     and assembles its PTX with `ptxas -v` (the newest ptxas bundled with triton);
  3. writes STEM.json / .md (default sm90_compile).
Uses triton's compiler API (triton.compiler.ASTSource), checked with triton 3.9; it
needs no CUDA driver. Also a pytest plugin (`-p sm90_compile_report`) for step 1.
"""
import argparse
import collections
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile

from common import REPO_ROOT, RESULTS_DIR, write_results

RECORD_ENV = "SM90_RECORD_FILE"
DEFAULT_TESTS = ["tests/test_attention.py", "tests/test_layer_norm.py", "tests/test_ffn.py",
                 "tests/test_embedding.py", "tests/test_backend.py", "tests/test_fused_encoder.py"]
KERNEL_MODULES = ["xlm_fast.triton_kernels.attention", "xlm_fast.triton_kernels.layer_norm",
                  "xlm_fast.triton_kernels.ffn", "xlm_fast.triton_kernels.embedding"]
H100_SHARED_MEMORY_LIMIT = 227 * 1024  # bytes per block (opt-in maximum)


# ---- step 1: the pytest plugin that records launches ------------------------------
def _describe_launch(function, args, kwargs):
    """JSON-able description of one launch: argument types as triton's JIT names them,
    constexpr values, and the 16-divisibility hints a real launch would give."""
    import torch
    from triton.runtime.jit import mangle_type

    parameters = inspect.signature(function.fn).parameters
    values = dict(zip(function.arg_names, args))
    values.update({name: value for name, value in kwargs.items() if name in parameters})
    signature, constexprs, divisible = {}, {}, []
    for name, parameter in parameters.items():
        value = values[name]
        if "constexpr" in str(parameter.annotation):
            constexprs[name] = value
            continue
        signature[name] = mangle_type(value)
        if isinstance(value, torch.Tensor):
            aligned = value.data_ptr() % 16 == 0
        else:
            aligned = isinstance(value, int) and not isinstance(value, bool) and value % 16 == 0
        if aligned:
            divisible.append(name)
    options = {key: kwargs[key] for key in ("num_warps", "num_stages") if key in kwargs}
    return dict(module=function.fn.__module__, kernel=function.fn.__name__, signature=signature,
                constexprs=constexprs, divisible=divisible, options=options)


def pytest_configure(config):
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    from triton.runtime.interpreter import InterpretedFunction

    for module_name in KERNEL_MODULES:  # the GPU's launch configuration, not the interpreter's
        importlib.import_module(module_name).interpreting = lambda: False

    def record(self, *args, grid, warmup, **kwargs):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_describe_launch(self, args, kwargs), sort_keys=True) + "\n")

    InterpretedFunction.run = record


def record_launches(test_files):
    """Runs the tests with the plugin; returns the distinct launch descriptions."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        path = handle.name
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TRITON_INTERPRET="1", XLM_FAST_BACKEND="triton", **{RECORD_ENV: path},
               PYTHONPATH=os.pathsep.join([bench_dir, REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "sm90_compile_report", "--no-header", "-rN",
                    "-p", "no:cacheprovider", *test_files], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL)
    with open(path, encoding="utf-8") as handle:
        lines = sorted(set(handle))
    os.unlink(path)
    return [json.loads(line) for line in lines]


# ---- step 2: compile for sm_90a ----------------------------------------------------
def _ptxas():
    import triton

    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for name in ("ptxas-blackwell", "ptxas"):  # the newest first: triton's PTX version may need it
        if os.path.exists(os.path.join(bin_dir, name)):
            return os.path.join(bin_dir, name)
    raise FileNotFoundError(f"no ptxas in {bin_dir}")


def compile_for_sm90(launch):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(launch["module"]), launch["kernel"])
    signature = {name: launch["signature"].get(name, "constexpr") for name in kernel.arg_names}
    attrs = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in launch["divisible"]}
    source = ASTSource(fn=kernel, signature=signature, constexprs=launch["constexprs"], attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=launch["options"])
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as tmp:
        ptx_path = os.path.join(tmp, "kernel.ptx")
        with open(ptx_path, "w", encoding="utf-8") as handle:
            handle.write(ptx)
        assembled = subprocess.run([_ptxas(), "-v", "--gpu-name=sm_90a", ptx_path, "-o",
                                    os.path.join(tmp, "kernel.cubin")], capture_output=True, text=True)
    report = assembled.stdout + assembled.stderr
    if assembled.returncode != 0:
        raise RuntimeError(f"ptxas failed: {report[-300:]}")
    registers = re.search(r"Used (\d+) registers", report)
    spills = re.search(r"(\d+) bytes spill stores", report)
    return dict(registers=int(registers.group(1)), spill_store_bytes=int(spills.group(1)),
                shared_bytes=compiled.metadata.shared, wgmma=ptx.count("wgmma.mma_async"),
                cp_async=ptx.count("cp.async.cg.shared.global"))


def _constexpr_summary(launch):
    """The specialisation in a few words: types of the tensors, constexprs, options."""
    dtypes = collections.Counter(t for t in launch["signature"].values() if t.startswith(("*", "tensordesc")))
    tensors = " ".join(sorted(dtypes))
    flags = " ".join(f"{k}={v}" for k, v in sorted(launch["constexprs"].items()) if v not in (False, None))
    options = " ".join(f"{k}={v}" for k, v in sorted(launch["options"].items()))
    return f"{tensors} | {flags} | {options}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=RESULTS_DIR)
    parser.add_argument("--stem", default="sm90_compile", help="output file name stem")
    parser.add_argument("tests", nargs="*", default=DEFAULT_TESTS)
    args = parser.parse_args()
    os.environ.pop("TRITON_INTERPRET", None)  # this process compiles real JIT functions
    sys.path.insert(0, REPO_ROOT)
    import torch
    import triton

    ptxas_version = subprocess.run([_ptxas(), "--version"], capture_output=True, text=True).stdout.split()[-1]
    machine = dict(device="none: offline compile for sm_90a", torch=torch.__version__, triton=triton.__version__,
                   cuda=f"ptxas {ptxas_version}")
    launches = record_launches(args.tests)
    rows, failures = [], 0
    for launch in launches:
        row = dict(machine, kernel=launch["kernel"], specialisation=_constexpr_summary(launch))
        try:
            row.update(compile_for_sm90(launch))
            if row["shared_bytes"] > H100_SHARED_MEMORY_LIMIT:
                row["error"] = f"shared memory {row['shared_bytes']} B > {H100_SHARED_MEMORY_LIMIT} B"
        except Exception as error:  # noqa: BLE001 - every failure is reported, then the run fails
            row["error"] = f"{type(error).__name__}: {str(error)[:200]}"
        failures += "error" in row
        rows.append(row)
    write_results(args.out_dir, args.stem, rows,
                  ["kernel", "specialisation", "registers", "spill_store_bytes", "shared_bytes", "wgmma",
                   "cp_async", "error"],
                  f"sm_90a compile of every kernel specialisation the tests launch ({len(rows)}, "
                  f"{failures} failing)")
    sys.exit(1 if failures or not rows else 0)


if __name__ == "__main__":
    main()

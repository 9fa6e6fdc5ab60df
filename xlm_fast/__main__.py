"""Command line: `python -m xlm_fast info` and `python -m xlm_fast demo`."""

import argparse
import importlib
import importlib.metadata
import os
import platform
import sys

from . import __version__, backend


def extension_built():
    try:
        importlib.import_module("xlm_fast._C")
    except ImportError:
        return False
    return True


def package_version(name):
    """Installed version of distribution `name`, or "not installed"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def info(out=print):
    import torch

    out(f"xlm_fast {__version__}")
    out(f"python {platform.python_version()}, torch {torch.__version__}, triton {package_version('triton')}, "
        f"transformers {package_version('transformers')}, sacremoses {package_version('sacremoses')}")
    out(f"C++ extension xlm_fast._C built: {extension_built()}")
    out(f"CUDA available: {torch.cuda.is_available()}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        path = backend.select_backend(device, dtype=torch.float16, output_attentions=False, uses_cache=False,
                                      dropout=0.0)
        taken = f"a {device.type.upper()} tensor takes the {path} path"
    except RuntimeError as error:  # XLM_FAST_BACKEND=triton where the kernels cannot run
        taken = str(error)
    if device.type == "cpu":  # no device for the fused kernels: claim no Triton path for CUDA
        taken = f"no CUDA device; {taken}"
    out(f"{backend.BACKEND_ENV}={backend.requested_backend()}: {taken}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="xlm_fast", description=__doc__)
    parser.add_argument("--version", action="version", version=f"xlm_fast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, extension and backend")
    demo = commands.add_parser("demo", help="end-to-end demo on a small checkpoint the package builds")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
    else:
        from .demo import run_demo

        run_demo(args.device)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. `python -m xlm_fast info | head -1`: the reader left early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(1)

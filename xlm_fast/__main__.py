"""Command line: `python -m xlm_fast info` and `python -m xlm_fast demo`."""

import argparse
import importlib
import platform
import sys

from . import __version__, backend


def extension_built():
    try:
        importlib.import_module("xlm_fast._C")
    except ImportError:
        return False
    return True


def info(out=print):
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    cuda_path = backend.select_backend(
        torch.device("cuda"), dtype=torch.float16, output_attentions=False, uses_cache=False, needs_grad=False,
        dropout_active=False
    )
    out(f"xlm_fast {__version__}")
    out(f"python {platform.python_version()}, torch {torch.__version__}, triton {triton_version}")
    out(f"C++ extension xlm_fast._C built: {extension_built()}")
    out(f"CUDA available: {torch.cuda.is_available()}")
    out(f"{backend.BACKEND_ENV}={backend.requested_backend()}: a CUDA tensor would take the {cuda_path} path, "
        "a CPU tensor the torch path")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="xlm_fast", description=__doc__)
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
    sys.exit(main())

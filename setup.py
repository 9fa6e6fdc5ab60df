"""Builds xlm_fast and its optional pybind11 extension xlm_fast._C.

The extension (csrc/) speeds up the tokenizer; the package works without it, so a
machine with no C++ compiler still installs, with a warning.
"""
import glob
import os
import warnings

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the extension cannot be compiled."""

    def run(self):
        try:
            super().run()
        except Exception as error:  # no compiler, missing headers, ...
            self._warn(error)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:
            self._warn(error)

    @staticmethod
    def _warn(error):
        warnings.warn(
            f"xlm_fast: the C++ extension xlm_fast._C was not built ({error}); "
            "the pure-Python tokenizer will be used instead."
        )


def extensions():
    try:
        from pybind11.setup_helpers import Pybind11Extension
    except ImportError:
        warnings.warn("xlm_fast: pybind11 is not installed; xlm_fast._C will not be built.")
        return []
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    return [
        Pybind11Extension(
            "xlm_fast._C",
            sources,
            cxx_std=17,
            extra_compile_args=["-O3"],
        )
    ]


def version():
    with open(os.path.join("xlm_fast", "__init__.py"), encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("__version__"):
                return line.split("=")[1].strip().strip('"')
    raise RuntimeError("xlm_fast/__init__.py has no __version__")


setup(
    name="xlm_fast",
    version=version(),
    description="Drop-in, kernel-accelerated XLM models and tokenizer with the transformers API",
    packages=find_packages(include=["xlm_fast", "xlm_fast.*", "triton_kernels"]),
    package_data={"xlm_fast": ["data/*"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    python_requires=">=3.9",
    # torch is left open so that a user's own (CUDA) torch is kept; the Makefile
    # installs the CPU wheel only where no torch is present.
    install_requires=["torch>=2.1", "numpy", "safetensors", "sacremoses", "regex"],
    extras_require={
        "triton": ["triton>=3.0"],
        "zh": ["rjieba"],
        "th": ["pythainlp"],
        "test": [
            "pytest",
            "pytest-benchmark",
            "transformers>=4.40",
            "subword-nmt",
            "triton>=3.0",
            "rjieba",
            "pythainlp",
        ],
    },
    entry_points={"console_scripts": ["xlm-fast=xlm_fast.__main__:main"]},
)

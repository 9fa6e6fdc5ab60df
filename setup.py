"""Builds the optional pybind11 extension xlm_fast._C; the metadata is in pyproject.toml.

The extension (csrc/) speeds up the tokenizer; the package works without it, so a
machine with no C++ compiler still installs, with a warning. XLM_FAST_REQUIRE_EXTENSION=1
(CI, `make test`) turns that warning into an error, so that a broken build cannot pass
unnoticed on the pure-Python fallback. XLM_FAST_EXTRA_CFLAGS adds compiler and linker
flags (the sanitizer build of `make test-asan`).
"""
import glob
import os
import shlex
import warnings

from setuptools import setup
from setuptools.command.build_ext import build_ext

REQUIRE_ENV = "XLM_FAST_REQUIRE_EXTENSION"


def extension_required():
    return os.environ.get(REQUIRE_ENV, "0") not in ("", "0")


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the extension cannot be compiled."""

    def run(self):
        try:
            super().run()
        except Exception as error:  # no compiler, missing headers, ...
            self._fail_or_warn(error)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:
            self._fail_or_warn(error)

    @staticmethod
    def _fail_or_warn(error):
        if extension_required():
            raise RuntimeError(f"xlm_fast: building xlm_fast._C failed and {REQUIRE_ENV} is set: {error}") from error
        warnings.warn(
            f"xlm_fast: the C++ extension xlm_fast._C was not built ({error}); "
            "the pure-Python tokenizer will be used instead.",
            stacklevel=2,
        )


def extensions():
    try:
        from pybind11.setup_helpers import Pybind11Extension
    except ImportError:
        if extension_required():
            raise
        warnings.warn("xlm_fast: pybind11 is not installed; xlm_fast._C will not be built.", stacklevel=2)
        return []
    extra_flags = shlex.split(os.environ.get("XLM_FAST_EXTRA_CFLAGS", ""))
    return [
        Pybind11Extension(
            "xlm_fast._C",
            sorted(glob.glob(os.path.join("csrc", "*.cpp"))),
            cxx_std=17,
            extra_compile_args=["-O3", "-Wall", "-Wextra", *extra_flags],
            extra_link_args=extra_flags,
        )
    ]


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

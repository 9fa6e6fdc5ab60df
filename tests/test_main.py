"""`python -m xlm_fast` command line."""

import os
import subprocess
import sys

import pytest

import xlm_fast
from xlm_fast.__main__ import main


def test_info_reports_versions_extension_and_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for expected in ("xlm_fast 0.1.0", "torch", "triton", "transformers", "sacremoses", "xlm_fast._C built"):
        assert expected in out
    import torch

    if not torch.cuda.is_available():  # no claim of a Triton path without a device
        assert "no CUDA device; a CPU tensor takes the torch path" in out and "CUDA tensor" not in out


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "xlm_fast", "info"], capture_output=True, text=True, check=True)
    assert "xlm_fast" in result.stdout


def test_unknown_command_is_rejected():
    with pytest.raises(SystemExit):
        main(["train"])


@pytest.mark.skipif(os.environ.get("XLM_FAST_REQUIRE_EXTENSION", "0") in ("", "0"),
                    reason="XLM_FAST_REQUIRE_EXTENSION is not set (the Makefile sets it where a compiler exists)")
def test_extension_is_built_where_required():
    # CI must not pass on the pure-Python fallback because the build broke.
    from xlm_fast.__main__ import extension_built

    assert extension_built(), "XLM_FAST_REQUIRE_EXTENSION is set but xlm_fast._C does not import"


def test_version_flag_prints_the_version():
    result = subprocess.run([sys.executable, "-m", "xlm_fast", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"xlm_fast {xlm_fast.__version__}"


def test_output_piped_into_a_closed_reader_gives_no_traceback():
    # `python -m xlm_fast info | head -0`: the reader closes the pipe before the output ends.
    process = subprocess.Popen([sys.executable, "-m", "xlm_fast", "info"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.wait()
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr

"""Smoke test of an installed wheel, run by `make wheel-check` in a fresh venv outside
the source tree: `python tests/wheel_smoke.py DIST_DIR`. Checks what the wheel holds
(the kernels under xlm_fast's namespace, no top-level `triton_kernels` that would clash
with Triton's own package, the subpackages and split modules, the compiled core, the
licence) and runs the demo from it."""

import glob
import importlib.util
import os
import sys
import zipfile


def check_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_levels = {name.split("/")[0] for name in names}
    assert "triton_kernels" not in top_levels, f"{wheel} installs a top-level triton_kernels package"
    for kernel in ("__init__", "attention", "embedding", "ffn", "layer_norm"):
        assert f"xlm_fast/triton_kernels/{kernel}.py" in names, f"{wheel} lacks xlm_fast/triton_kernels/{kernel}.py"
    for module in ("integrations/__init__", "integrations/transformers", "tokenization_utils_base", "beam_search"):
        assert f"xlm_fast/{module}.py" in names, f"{wheel} lacks xlm_fast/{module}.py"
    assert any(name.startswith("xlm_fast/_C") for name in names), f"{wheel} lacks the compiled xlm_fast._C"
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), f"{wheel} lacks LICENSE"
    metadata = next(zipfile.ZipFile(wheel).read(name).decode() for name in names if name.endswith("/METADATA"))
    for field in ("Requires-Python: >=3.9", "License-Expression: MIT", "Requires-Dist: torch>=2.1",
                  "Provides-Extra: test"):
        assert field in metadata, f"METADATA lacks {field!r}"


def check_installed_package():
    import xlm_fast
    import xlm_fast._C  # noqa: F401  (the wheel's compiled core imports)

    source_package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "xlm_fast")
    assert os.path.dirname(os.path.abspath(xlm_fast.__file__)) != source_package, "imported the source tree"
    assert "site-packages" in xlm_fast.__file__, xlm_fast.__file__
    assert importlib.util.find_spec("xlm_fast.triton_kernels") is not None
    import xlm_fast.integrations  # noqa: F401  (imports without transformers, which the wheel does not need)
    from xlm_fast.demo import run_demo

    logits = run_demo("cpu")
    assert logits.ndim == 3


def main(dist_dir):
    wheels = glob.glob(os.path.join(dist_dir, "xlm_fast-*.whl"))
    assert len(wheels) == 1, f"expected one xlm_fast wheel in {dist_dir}, found {wheels}"
    check_wheel_contents(wheels[0])
    check_installed_package()
    print(f"wheel smoke test passed: {os.path.basename(wheels[0])}")


if __name__ == "__main__":
    main(sys.argv[1])

"""The end-to-end demo runs on its built-in checkpoint and reports what ran."""

import torch

from xlm_fast.demo import SAMPLES, run_demo


def test_demo_tokenizes_runs_and_reports_the_backend():
    lines = []
    logits = run_demo("cpu", out=lines.append)
    text = "\n".join(lines)
    assert logits.shape[0] == len(SAMPLES) and torch.isfinite(logits).all()
    assert "on the torch path" in text
    for lang, _ in SAMPLES:
        assert f"[{lang}]" in text
    assert "greedy generate" in text

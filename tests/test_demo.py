"""The end-to-end demo runs on its built-in checkpoint and reports what ran."""

import importlib.util

import torch

from xlm_fast import demo
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


def test_demo_skips_a_language_whose_segmenter_is_missing(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "rjieba" else real_find_spec(name))
    lines = []
    logits = run_demo("cpu", out=lines.append)
    text = "\n".join(lines)
    assert logits.shape[0] == len(SAMPLES) - 1
    assert "[zh] skipped: its word segmenter rjieba is not installed" in text
    assert [lang for lang, _ in demo.available_samples()] == [lang for lang, _ in SAMPLES if lang != "zh"]

"""Greedy generation of a causal XLM: xlm_fast with its key/value cache against
transformers' generate (which recomputes the whole prefix at every step) and against
xlm_fast without the cache, on the same random checkpoint, measured in the same run.

    python bench/bench_generation.py            # writes bench/results/generation.{json,md}
    pytest bench/bench_generation.py --benchmark-only
"""

import json
import os
import platform
import statistics
import sys
import time

import pytest
import torch

import xlm_fast

RESULTS = os.path.join(os.path.dirname(__file__), "results")
SHAPE = dict(vocab_size=8000, emb_dim=512, n_layers=6, n_heads=8, causal=True, max_position_embeddings=512)
NEW_TOKENS = 64


def twin_models():
    import transformers

    torch.manual_seed(0)
    ours = xlm_fast.XLMWithLMHeadModel(xlm_fast.XLMConfig(**SHAPE, init_std=0.1)).eval()
    theirs = transformers.XLMWithLMHeadModel(transformers.XLMConfig(**SHAPE)).eval()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def runners(ours, theirs, prompt):
    return {
        "transformers generate": lambda: theirs.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False,
                                                         eos_token_id=None),
        "xlm_fast, no cache": lambda: ours.generate(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=-1,
                                                    use_cache=False),
        "xlm_fast, cache": lambda: ours.generate(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=-1),
    }


def median_seconds(function, repeats):
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.fixture(scope="module")
def models():
    return twin_models()


@pytest.mark.parametrize("name", ["transformers generate", "xlm_fast, no cache", "xlm_fast, cache"])
def test_generate_64_tokens(benchmark, models, name):
    prompt = torch.randint(4, SHAPE["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(0))
    benchmark.pedantic(runners(*models, prompt)[name], rounds=3, iterations=1)


def main():
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    ours, theirs = twin_models()
    rows = []
    for batch, prompt_len in [(1, 16), (4, 16), (1, 128)]:
        prompt = torch.randint(4, SHAPE["vocab_size"], (batch, prompt_len), generator=torch.Generator().manual_seed(0))
        outputs = {name: run() for name, run in runners(ours, theirs, prompt).items()}
        assert torch.equal(outputs["xlm_fast, cache"], outputs["transformers generate"]), "greedy outputs differ"
        times = {name: median_seconds(run, 3) for name, run in runners(ours, theirs, prompt).items()}
        baseline = times["transformers generate"]
        for name, seconds in times.items():
            rows.append(dict(case=f"batch {batch}, prompt {prompt_len}, {NEW_TOKENS} new tokens", runner=name,
                             median_ms=round(seconds * 1e3, 1),
                             tokens_per_s=round(batch * NEW_TOKENS / seconds, 1),
                             speedup_vs_transformers=round(baseline / seconds, 2)))
    device = f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
    meta = dict(device=device, torch=torch.__version__, dtype="float32", model=SHAPE)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "generation.json"), "w") as handle:
        json.dump(dict(meta, rows=rows), handle, indent=2)
    lines = [f"# Greedy generation, causal XLM ({device}, fp32)", "",
             f"Model: {SHAPE}. Command: `python bench/bench_generation.py`.", "",
             "| case | runner | median ms | tokens/s | speed-up vs transformers |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['case']} | {r['runner']} | {r['median_ms']} | {r['tokens_per_s']} "
              f"| {r['speedup_vs_transformers']}x |"
              for r in rows]
    with open(os.path.join(RESULTS, "generation.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

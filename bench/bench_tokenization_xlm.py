"""XLMTokenizer speed: xlm_fast vs transformers on the multilingual sample corpus.

pytest-benchmark cases (`pytest bench/bench_tokenization_xlm.py`) and a script
(`python bench/bench_tokenization_xlm.py`) that measures in one run, on the same
vocabulary (learned from the corpus as in the tests):
  - end to end, single texts (one call per text) and batches (64 texts per call, one core
    and both cores), texts/s and MB/s (UTF-8 input bytes), ratio to transformers;
  - the BPE step alone over the corpus' pre-tokenised words: C++ core (1 and all threads)
    and the pure-Python twin vs transformers' XLMTokenizer.bpe (the baseline), with no word
    cache anywhere, and again with each cache emptied before each pass;
  - batches returning torch tensors (built from the C++ buffers), and the whole pipeline in
    C++ (bypass_tokenizer=True: whitespace pre-tokenizer, offsets computed) for scale;
  - where the time of one pass goes, for single texts and for batches: the C++ pre-tokenizer
    alone, the rest of the one C++ call (BPE, ids, special tokens, padding), Python around
    the call, tensor building (the C++ pre-tokenizer against sacremoses: bench/bench_moses.py).
Writes bench/results/tokenization_xlm.json and .md.

transformers 5.x ignores `lang=` (every language runs its English Moses path), so the
end-to-end cases run lang="en" for both (identical pipelines, identical ids); the
"per language" row adds ours with the real language pipelines (jieba, PyThaiNLP, ...).
Japanese is left out (KyTea is not installed).
"""
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import pytest  # noqa: E402

from xlm_fast import tokenization_xlm  # noqa: E402
from xlm_fast.bpe import BPEModel as PyBPEModel  # noqa: E402
from xlm_fast.tokenization_xlm import XLMTokenizer  # noqa: E402

from common import cpu_description  # noqa: E402
from test_tokenization_xlm import learn_vocab, read_corpus, write_vocab_files  # noqa: E402

BATCH = 64
CORES = os.cpu_count() or 1


def setup():
    """(corpus without ja, vocab paths, ours, transformers' tokenizer)."""
    import transformers

    corpus = [(lang, text) for lang, text in read_corpus() if lang != "ja"]
    directory = tempfile.mkdtemp(prefix="bench_xlm_")
    paths = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
    write_vocab_files(*learn_vocab(read_corpus()), *paths)
    return corpus, paths, XLMTokenizer(*paths, num_threads=1), transformers.XLMTokenizer(*paths)


def times(function, repeats):
    function()  # warm-up: caches, lazily built Moses objects, worker processes
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def median_time(function, repeats):
    return statistics.median(times(function, repeats))


def interleaved_times(functions, repeats):
    """Seconds of one call of each function, per pass: the functions take turns (A B C, A B C,
    ...) after a warm-up, and a pass of a faster function calls it as many times as it takes to
    last about as long as the first function's (its time is divided by that count), so that a
    slow stretch of this shared machine weighs on all of them alike instead of on the shortest."""
    warm = []
    for function in functions:
        start = time.perf_counter()
        function()
        warm.append(time.perf_counter() - start)
    counts = [max(1, round(warm[0] / max(seconds, 1e-9))) for seconds in warm]
    seconds = [[] for _ in functions]
    for _ in range(repeats):
        for function, count, passes in zip(functions, counts, seconds):
            start = time.perf_counter()
            for _ in range(count):
                function()
            passes.append((time.perf_counter() - start) / count)
    return seconds


# ----------------------------------------------------------------------------- pytest-benchmark


@pytest.fixture(scope="module")
def bench_setup():
    return setup()


def test_ours_single_texts(benchmark, bench_setup):
    corpus, _, ours, _ = bench_setup
    texts = [text for _, text in corpus[::10]]
    benchmark(lambda: [ours(text) for text in texts])


def test_transformers_single_texts(benchmark, bench_setup):
    corpus, _, _, hf = bench_setup
    texts = [text for _, text in corpus[::10]]
    benchmark(lambda: [hf(text) for text in texts])


def test_ours_batch(benchmark, bench_setup):
    corpus, _, ours, _ = bench_setup
    texts = [text for _, text in corpus[:BATCH]]
    benchmark(lambda: ours(texts, padding=True))


def _words(corpus, ours):
    return [ours.pre_tokenizer(text, lang) for lang, text in corpus]


@pytest.mark.parametrize("backend", ["cpp", "python"])
def test_bpe_step(benchmark, bench_setup, backend):
    corpus, paths, ours, _ = bench_setup
    if backend == "cpp" and tokenization_xlm.CppBPEModel is None:
        pytest.skip("extension not built")
    model = XLMTokenizer(*paths, bpe_backend=backend).bpe_model
    model.cache_capacity = 0
    words = _words(corpus[::10], ours)
    benchmark(lambda: model.encode_batch(words, 1))


# ----------------------------------------------------------------------------- script


def main(repeats=7):
    corpus, paths, ours, hf = setup()
    ours_all_cores = XLMTokenizer(*paths, num_threads=CORES, num_workers=CORES)
    texts = [text for _, text in corpus]
    megabytes = sum(len(text.encode("utf-8")) for text in texts) / 1e6
    by_lang = {}
    for lang, text in corpus:
        by_lang.setdefault(lang, []).append(text)
    batches = [(lang, texts_[i : i + BATCH]) for lang, texts_ in by_lang.items() for i in range(0, len(texts_), BATCH)]
    assert [ours(t)["input_ids"] for t in texts[::50]] == [hf(t)["input_ids"] for t in texts[::50]]

    rows = []

    def record(case, seconds, baseline=None, n_texts=None, shape="", speedup=None):
        n_texts = len(texts) if n_texts is None else n_texts
        rows.append({
            "case": case, "shape": shape, "median_s": seconds, "texts_per_s": n_texts / seconds,
            "mb_per_s": megabytes * n_texts / len(texts) / seconds,
            "speedup_vs_baseline": speedup if speedup is not None or baseline is None else baseline / seconds,
        })
        return seconds

    def record_interleaved(cases, shape):
        """cases: [(name, function)], the baseline first; passes taken in turns, each speedup the
        median of the per-pass ratios baseline / case."""
        seconds = interleaved_times([function for _, function in cases], repeats)
        record(cases[0][0], statistics.median(seconds[0]), shape=shape)
        for (name, _), passes in zip(cases[1:], seconds[1:]):
            record(name, statistics.median(passes), shape=shape,
                   speedup=statistics.median(base / own for base, own in zip(seconds[0], passes)))

    record_interleaved([
        ("transformers, single texts (lang=en)", lambda: [hf(t) for t in texts]),
        ("xlm_fast, single texts (lang=en)", lambda: [ours(t) for t in texts]),
        ("xlm_fast, single texts (per-language pipelines)", lambda: [ours(t, lang=lang) for lang, t in corpus]),
    ], f"{len(texts)} texts, 1 per call")
    shape = f"{len(batches)} batches of <= {BATCH}, padded"
    record_interleaved([
        ("transformers, batches (lang=en)", lambda: [hf(b, padding=True) for _, b in batches]),
        ("xlm_fast, batches, 1 core (lang=en)", lambda: [ours(b, padding=True) for _, b in batches]),
        (f"xlm_fast, batches, {CORES} cores (lang=en)", lambda: [ours_all_cores(b, padding=True) for _, b in batches]),
    ], shape)
    record_interleaved([
        ("transformers, batches, return_tensors='pt' (lang=en)",
         lambda: [hf(b, padding=True, return_tensors="pt") for _, b in batches]),
        ("xlm_fast, batches, return_tensors='pt', 1 core (lang=en)",
         lambda: [ours(b, padding=True, return_tensors="pt") for _, b in batches]),
        (f"xlm_fast, batches, return_tensors='pt', {CORES} cores (lang=en)",
         lambda: [ours_all_cores(b, padding=True, return_tensors="pt") for _, b in batches]),
    ] + [
        (f"xlm_fast, batches, bypass_tokenizer=True (all in C++, with offsets), {name} "
         "(other pipeline: ratio for scale only)",
         lambda t=tokenizer: [t(b, padding=True, return_tensors="pt", bypass_tokenizer=True) for _, b in batches])
        for name, tokenizer in (("1 core", ours), (f"{CORES} cores", ours_all_cores))
    ], shape)

    # BPE step alone (pre-tokenised words -> ids), one thread unless said otherwise. Two groups,
    # each with transformers' XLMTokenizer.bpe as the baseline, so that every ratio compares the
    # same cache policy: (1) no word cache at all (transformers' cache made to store nothing);
    # (2) the word cache emptied before each pass (repeated words within a pass are hits; the
    # corpus has ~3.4 words per distinct word, so this group measures mostly the cache).
    words = [ours.pre_tokenizer(text, lang) for lang, text in corpus]
    n_words = sum(map(len, words))
    n_distinct = len({word for sequence in words for word in sequence})

    def hf_bpe():
        for sequence in words:
            for word in sequence:
                hf.bpe(word)

    def hf_bpe_cleared():
        hf.cache.clear()
        hf_bpe()

    class NoCache(dict):
        """transformers' bpe looks its word up in `cache` and stores the result: store nothing."""

        def __setitem__(self, key, value):
            pass

    hf_cache = hf.cache
    hf.cache = NoCache()
    shape = f"{n_words} words ({n_distinct} distinct) in {len(words)} sequences, no cache"
    base = record("BPE: transformers XLMTokenizer.bpe", median_time(hf_bpe, repeats), shape=shape)
    hf.cache = hf_cache
    python = PyBPEModel(ours.encoder, ours.merges, ours.unk_token_id, cache_capacity=0)
    record("BPE: pure-Python twin", median_time(lambda: python.encode_batch(words), repeats), base, shape=shape)
    cpp = None
    if tokenization_xlm.CppBPEModel is not None:
        cpp = tokenization_xlm.CppBPEModel(ours.encoder, ours.merges, ours.unk_token_id, 0)
        record("BPE: C++ core, 1 thread", median_time(lambda: cpp.encode_batch(words, 1), repeats), base, shape=shape)
        record(f"BPE: C++ core, {CORES} threads",
               median_time(lambda: cpp.encode_batch(words, CORES), repeats), base, shape=shape)

    shape = f"{n_words} words ({n_distinct} distinct) in {len(words)} sequences, cache emptied before each pass"
    base = record("BPE: transformers XLMTokenizer.bpe, cache per pass", median_time(hf_bpe_cleared, repeats),
                  shape=shape)
    cached = [PyBPEModel(ours.encoder, ours.merges, ours.unk_token_id)]
    if cpp is not None:
        cached.append(tokenization_xlm.CppBPEModel(ours.encoder, ours.merges, ours.unk_token_id))
    for model in cached:
        def cleared(model=model):
            model.clear_cache()
            model.encode_batch(words, 1)

        name = "pure-Python twin" if isinstance(model, PyBPEModel) else "C++ core, 1 thread"
        record(f"BPE: {name}, cache per pass", median_time(cleared, repeats), base, shape=shape)
    if cpp is not None:
        record("BPE: C++ core, 1 thread, no cache (vs the cached transformers row)",
               median_time(lambda: cpp.encode_batch(words, 1), repeats), base, shape=shape)

    profile = batch_profile = {}  # the stage tables time the C++ path
    if tokenization_xlm.CppBPEModel is not None:
        profile = profile_single_pass(ours, corpus, repeats)
        batch_profile = profile_batches(ours, batches, repeats)
    write_results(rows, profile, megabytes, len(texts), batch_profile)


def captured_call(ours, *args, **kwargs):
    """The arguments (model, added tokens, pre-tokenizer, texts, pairs, options) of the one C++
    call that ours(*args, **kwargs) makes, so that a stage profile times exactly that call."""
    seen, real = [], tokenization_xlm.encode_texts

    def spy(*call):
        seen.append(call)
        return real(*call)

    tokenization_xlm.encode_texts = spy
    try:
        ours(*args, **kwargs)
    finally:
        tokenization_xlm.encode_texts = real
    return seen[0]


def stage_seconds(pre_tokenizer, calls, total, with_tensors, repeats):
    """Seconds of one pass per stage, each timed alone (minimum of the passes, not the median,
    so that load from other processes does not leak into the shares). `calls`: the captured
    encode_texts arguments of each __call__ of the pass; `total` and `with_tensors`: the pass
    through __call__ returning lists / np arrays, and torch tensors (None: not measured)."""
    from xlm_fast._C import pre_tokenize_count

    moses = min(times(lambda: [pre_tokenize_count(pre_tokenizer, call[3]) for call in calls], repeats))
    cpp = min(times(lambda: [tokenization_xlm.encode_texts(*call) for call in calls], repeats))
    python = min(times(total, repeats))
    seconds = {
        "C++ pre-tokenizer (Moses) alone": moses,
        "BPE + ids/special tokens/truncation/padding, buffers -> arrays or lists (rest of the C++ call)": cpp - moses,
        "Python around the call (argument checks, options, BatchEncoding)": python - cpp,
    }
    if with_tensors is not None:
        tensors = min(times(with_tensors, repeats))
        seconds["tensor building (torch.from_numpy on the buffers)"] = tensors - python
        python = tensors
    seconds["total"] = python
    return seconds


def profile_single_pass(ours, corpus, repeats):
    """Seconds of one pass over the corpus (lang=en, one call per text, lists) per stage of the
    C++ path: one encode_texts call per text."""
    texts = [text for _, text in corpus]
    calls = [captured_call(ours, text) for text in texts]
    pre_tokenizer = calls[0][2]
    return stage_seconds(pre_tokenizer, calls, lambda: [ours(text) for text in texts], None, repeats)


def profile_batches(ours, batches, repeats):
    """Seconds of one pass over the batches (1 thread, padding=True, return_tensors='pt') per
    stage: one encode_texts call per batch (arrays), then np arrays, then torch tensors."""
    calls = [captured_call(ours, batch, padding=True, return_tensors="np") for _, batch in batches]
    pre_tokenizer = calls[0][2]
    return stage_seconds(pre_tokenizer, calls, lambda: [ours(batch, padding=True, return_tensors="np")
                                                        for _, batch in batches],
                         lambda: [ours(batch, padding=True, return_tensors="pt") for _, batch in batches], repeats)


def write_results(rows, profile, megabytes, n_texts, batch_profile):
    import transformers

    results_dir = os.path.join(HERE, "results")
    os.makedirs(results_dir, exist_ok=True)
    meta = {"device": cpu_description(), "transformers": transformers.__version__, "corpus_texts": n_texts,
            "corpus_mb": round(megabytes, 4), "bpe_backend": "cpp" if tokenization_xlm.CppBPEModel else "python"}
    with open(os.path.join(results_dir, "tokenization_xlm.json"), "w", encoding="utf-8") as handle:
        json.dump({"meta": meta, "rows": rows, "profile_s": profile, "batch_profile_s": batch_profile}, handle,
                  indent=2)
    lines = [
        "# XLMTokenizer: xlm_fast vs transformers",
        "",
        f"Device: {meta['device']}; transformers {meta['transformers']}; corpus: tests/data/sample.tsv without ja "
        f"({n_texts} texts, {megabytes:.3f} MB). Written by `python bench/bench_tokenization_xlm.py`; "
        "median of 7 passes after a warm-up; speedup = baseline time / time, baseline = the first row of each group; "
        "in the end-to-end groups the cases take turns pass by pass, a pass of a faster case repeats it to last as "
        "long as the baseline's, and the speedup is the median of the per-pass ratios (the machine is shared: its "
        "speed drifts).",
        "",
        "| case | shape | median (s) | texts/s | MB/s | speedup |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        speedup = "baseline" if row["speedup_vs_baseline"] is None else f"{row['speedup_vs_baseline']:.2f}x"
        lines.append(f"| {row['case']} | {row['shape']} | {row['median_s']:.4f} | {row['texts_per_s']:.0f} | "
                     f"{row['mb_per_s']:.3f} | {speedup} |")
    lines += ["", "Where one pass of single-text calls (lang=en, lists) spends its time (minimum of 7 passes per "
              "stage):", "", "| stage | seconds | share |", "| --- | --- | --- |"]
    for name, seconds in profile.items():
        lines.append(f"| {name} | {seconds:.4f} | {seconds / profile['total']:.0%} |")
    lines += ["", f"Where one pass of batches (<= {BATCH} texts, 1 thread, padding=True, return_tensors='pt') spends "
              "its time (minimum of 7 passes per stage):", "", "| stage | seconds | share |", "| --- | --- | --- |"]
    for name, seconds in batch_profile.items():
        lines.append(f"| {name} | {seconds:.4f} | {seconds / batch_profile['total']:.0%} |")
    with open(os.path.join(results_dir, "tokenization_xlm.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

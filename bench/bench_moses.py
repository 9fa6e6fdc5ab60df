"""The C++ Moses pre-tokenizer (csrc/moses.h, xlm_fast/moses.py) against the Python reference
(xlm_fast/pre_tokenizer.py's XLMPreTokenizer: sacremoses + XLM's steps) on one thread.

Corpus: tests/data/sample.tsv without zh/th/ja (the Moses languages), each text in its own
language, do_lowercase_and_remove_accent=True (XLM's default). Rows:
  - the Python reference, one call per text (the baseline);
  - the C++ pipeline alone: MosesPipeline::operator() over the corpus inside C++ (no Python
    objects; `MosesPipeline.time_passes`), what the batch encoder calls per text;
  - the C++ pipeline seen from Python: `MosesPipeline.batch(texts, 1)` per language, words and
    per-character spans returned as Python lists (one tuple per character: with the garbage
    collector on, collections dominate; a row with it off shows the rest).
texts/s, MB/s (UTF-8 input bytes), microseconds per text, ratio to the reference. Writes
bench/results/moses.json and .md.

    python bench/bench_moses.py
    pytest bench/bench_moses.py   (pytest-benchmark cases)
"""
import gc
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.append(ROOT)  # after PYTHONPATH: a build elsewhere (PYTHONPATH=build_dir) is the one measured
sys.path.insert(0, os.path.join(ROOT, "tests"))

import pytest  # noqa: E402

from xlm_fast import moses  # noqa: E402
from xlm_fast.pre_tokenizer import XLMPreTokenizer  # noqa: E402

from common import cpu_description  # noqa: E402
from test_moses import read_corpus  # noqa: E402

CORES = os.cpu_count() or 1
LOWERCASE = True


def moses_corpus():
    """{lang: [texts]} of the corpus' Moses languages."""
    by_lang = {}
    for lang, text in read_corpus():
        if lang not in XLMPreTokenizer.CUSTOM_LANGUAGES:
            by_lang.setdefault(lang, []).append(text)
    return by_lang


def median_time(function, repeats):
    function()  # warm-up: lazily built Moses objects, caches
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def cpp_alone_seconds(by_lang, repeats):
    """Median over passes of one pass of operator() over the whole corpus, timed in C++."""
    passes = [0.0] * repeats
    for lang, texts in by_lang.items():
        pipeline = moses.pipeline(lang, LOWERCASE)
        pipeline.time_passes(texts, 1)  # warm-up
        for k, seconds in enumerate(pipeline.time_passes(texts, repeats)[0]):
            passes[k] += seconds
    return statistics.median(passes)


# ----------------------------------------------------------------------------- pytest-benchmark

needs_cpp = pytest.mark.skipif(not moses.available(), reason="xlm_fast._C has no MosesPipeline")


@pytest.fixture(scope="module")
def corpus():
    return {lang: texts[::10] for lang, texts in moses_corpus().items()}


def test_python_reference(benchmark, corpus):
    reference = XLMPreTokenizer(LOWERCASE)
    benchmark(lambda: [reference(text, lang) for lang, texts in corpus.items() for text in texts])


@needs_cpp
def test_cpp_from_python(benchmark, corpus):
    pipelines = {lang: moses.pipeline(lang, LOWERCASE) for lang in corpus}
    benchmark(lambda: [pipelines[lang].batch(texts, 1) for lang, texts in corpus.items()])


# ----------------------------------------------------------------------------- script


def main(repeats=7):
    if not moses.available():
        sys.exit("bench_moses.py: xlm_fast._C has no MosesPipeline; nothing to measure")
    import sacremoses

    by_lang = moses_corpus()
    n_texts = sum(len(texts) for texts in by_lang.values())
    megabytes = sum(len(text.encode("utf-8")) for texts in by_lang.values() for text in texts) / 1e6
    reference = XLMPreTokenizer(LOWERCASE)
    pipelines = {lang: moses.pipeline(lang, LOWERCASE) for lang in by_lang}
    for lang, texts in by_lang.items():  # the same words, or the figures mean nothing
        assert pipelines[lang].batch(texts, 1) == [pipelines[lang](text) for text in texts]
        assert [words for words, _ in pipelines[lang].batch(texts, 1)] == [reference(t, lang) for t in texts]

    rows = []

    def record(case, seconds, baseline=None):
        rows.append({"case": case, "median_s": seconds, "texts_per_s": n_texts / seconds,
                     "mb_per_s": megabytes / seconds, "us_per_text": seconds / n_texts * 1e6,
                     "speedup_vs_baseline": None if baseline is None else baseline / seconds})
        return seconds

    base = record("Python reference (sacremoses + XLM's steps), one call per text",
                  median_time(lambda: [reference(t, lang) for lang, texts in by_lang.items() for t in texts],
                              repeats))
    record("C++ MosesPipeline alone (operator(), timed in C++, no Python objects)",
           cpp_alone_seconds(by_lang, repeats), base)
    def batches():
        return [pipelines[lang].batch(texts, 1) for lang, texts in by_lang.items()]

    record("C++ MosesPipeline.batch(texts, 1) per language (words + spans as Python lists)",
           median_time(batches, repeats), base)
    gc.disable()  # the lists hold one tuple per character: most of the row above is the collector
    try:
        record("the same with Python's gc disabled while timing", median_time(batches, repeats), base)
    finally:
        gc.enable()

    meta = {"device": cpu_description(), "sacremoses": sacremoses.__version__, "corpus_texts": n_texts,
            "corpus_mb": round(megabytes, 4), "languages": sorted(by_lang), "lowercase_and_remove_accent": LOWERCASE,
            "threads": 1, "repeats": repeats}
    results_dir = os.path.join(HERE, "results")
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, "moses.json"), "w", encoding="utf-8") as handle:
        json.dump({"meta": meta, "rows": rows}, handle, indent=2)
    lines = [
        "# Moses pre-tokenizer: C++ pipeline vs the Python reference",
        "",
        f"Device: {meta['device']}; sacremoses {meta['sacremoses']}; corpus: tests/data/sample.tsv, Moses languages "
        f"({', '.join(meta['languages'])}; {n_texts} texts, {megabytes:.3f} MB), each text in its language, "
        f"do_lowercase_and_remove_accent={LOWERCASE}, one thread. Written by `python bench/bench_moses.py`; "
        f"median of {repeats} passes after a warm-up; speedup = reference time / time.",
        "",
        "| case | median (s) | texts/s | MB/s | µs per text | speedup |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        speedup = "baseline" if row["speedup_vs_baseline"] is None else f"{row['speedup_vs_baseline']:.1f}x"
        lines.append(f"| {row['case']} | {row['median_s']:.4f} | {row['texts_per_s']:.0f} | {row['mb_per_s']:.2f} "
                     f"| {row['us_per_text']:.2f} | {speedup} |")
    with open(os.path.join(results_dir, "moses.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

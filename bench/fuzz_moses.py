"""Differential fuzz of the C++ pre-tokenizer (xlm_fast/moses.py, csrc/moses.cpp) against the
Python reference (xlm_fast/pre_tokenizer.py, i.e. sacremoses + XLM's steps): random strings
from tests/test_moses.py's pieces (scripts, digits, URLs, e-mails, XML characters, quotes,
apostrophes, dashes, ellipses, control and format characters, combining marks, lone
surrogates, non-breaking prefixes before periods) in random languages and lowercase
settings; words must be identical and spans inside the text and non-decreasing.

    python bench/fuzz_moses.py --count 30000 --seed 0
"""
import argparse
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from xlm_fast import moses  # noqa: E402
from xlm_fast.pre_tokenizer import XLMPreTokenizer  # noqa: E402

from test_moses import MOSES_LANGS, check_spans, random_text  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=30000, help="random strings to try")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not moses.available():
        sys.exit("fuzz_moses.py: xlm_fast._C has no MosesPipeline; nothing to compare")
    references = {flag: XLMPreTokenizer(flag) for flag in (True, False)}
    cpps = {flag: moses.CppPreTokenizer(flag) for flag in (True, False)}
    rng = random.Random(args.seed)
    tried = differences = 0
    for _ in range(args.count):
        text = random_text(rng)
        lang = rng.choice(MOSES_LANGS + ["zh", "th"])
        lowercase = rng.random() < 0.5
        if lang in ("zh", "th") and any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            continue  # rjieba / PyThaiNLP refuse surrogates in both paths
        tried += 1
        want = references[lowercase](text, lang)
        got, spans = cpps[lowercase].words_and_spans(text, lang)
        try:
            check_spans(text, spans)
            spans_ok = len(spans) == len(got)
        except AssertionError:
            spans_ok = False
        if got != want or not spans_ok:
            differences += 1
            if differences <= 20:
                print(f"DIFFERENCE lang={lang} lowercase={lowercase} text={text!r}\n  python: {want}\n  cpp:    {got}")
    print(f"strings tried: {tried}, differences: {differences}")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()

"""Differential fuzz of the tokenizer: random strings mixing scripts, digits, URLs, XML
characters, quotes, dashes, control and format characters, combining marks and lone
surrogates, through the C++ core and its pure-Python twin (BPE alone, and the whole
tokenizer with and without bypass_tokenizer); any difference is printed and fails the run.

    python bench/fuzz_tokenization_xlm.py --count 3000 --seed 0

`make test-asan` runs it (short) with the extension built under ASan + UBSan.
"""
import argparse
import os
import random
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from xlm_fast import tokenization_xlm  # noqa: E402
from xlm_fast.tokenization_xlm import XLMTokenizer  # noqa: E402

from test_tokenization_xlm import learn_vocab, read_corpus, write_vocab_files  # noqa: E402

PIECES = [
    "abc", "Éte", "straße", "中文", "ไทย", "русский", "ελληνικά", "日本", "😀", "123", "4,5", "3.14",
    "http://a.b/c?d=1&e=2", "x@y.org", "<", ">", "&", "&amp;", "'", '"', "«", "»", "„", "“", "”", "‘", "’",
    "`", "´", "-", "–", "—", "...", "…", "n't", "l'", "\t", "\n", " ", "\u00a0", "\u200b", "\u200d",
    "\u0301", "\u0327", "\x00", "\x07", "\x7f", "\ufeff", "\ud800", "\udfff", "<s>", "</s>", "<special3>",
]
LANGS = ["en", "fr", "de", "ro", "ru", "el", "it"]


def random_text(rng):
    return "".join(rng.choice(PIECES) + rng.choice(["", " ", ""]) for _ in range(rng.randint(0, 12)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000, help="random strings to try")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if tokenization_xlm.CppBPEModel is None:
        sys.exit("fuzz_tokenization_xlm.py: the extension xlm_fast._C is not built; nothing to compare")
    vocab, merges = learn_vocab(read_corpus(os.path.join(ROOT, "tests", "data", "sample.tsv")), num_merges=500)
    with tempfile.TemporaryDirectory() as directory:
        paths = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
        write_vocab_files(vocab, merges, *paths)
        cpp, python = XLMTokenizer(*paths, bpe_backend="cpp"), XLMTokenizer(*paths, bpe_backend="python")
    rng = random.Random(args.seed)
    differences = 0
    texts = [random_text(rng) for _ in range(args.count)]
    for text in texts:
        for bypass in (True, False):
            if not bypass and any(0xD800 <= ord(char) <= 0xDFFF for char in text):
                continue  # the Moses front (sacremoses) takes text, not surrogates, in both paths
            lang = rng.choice(LANGS)
            got = cpp(text, lang=lang, bypass_tokenizer=bypass)["input_ids"]
            want = python(text, lang=lang, bypass_tokenizer=bypass)["input_ids"]
            if got != want:
                differences += 1
                print(f"DIFFERENT ({lang}, bypass={bypass}): {text!r}\n  cpp    {got}\n  python {want}")
    batch_same = cpp(texts, bypass_tokenizer=True)["input_ids"] == python(texts, bypass_tokenizer=True)["input_ids"]
    differences += not batch_same
    print(f"{args.count} strings (seed {args.seed}), one by one and as one batch: {differences} differences")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()

"""xlm_fast.worker_pool: shares of a batch pre-tokenized in forked processes, in order."""
import pytest

from xlm_fast.pre_tokenizer import XLMPreTokenizer
from xlm_fast.worker_pool import _PreTokenizerPool


def test_pool_keeps_order_and_equals_the_local_pre_tokenizer():
    pool = _PreTokenizerPool(2, True)
    pre = XLMPreTokenizer(True)
    texts = [f"Sentence number {i}, with Words!" for i in range(9)]
    shares = [[(text, "en", False) for text in texts[a:b]] for a, b in ((0, 3), (3, 5), (5, 9))]
    words = pool.map(shares, lambda share: [pre(*item) for item in share])
    assert words == [pre(text) for text in texts]
    assert pool.map(shares[:2], lambda share: [pre(*item) for item in share]) == [pre(t) for t in texts[:5]]


def test_a_worker_error_is_raised_in_the_caller():
    pool = _PreTokenizerPool(1, False)
    with pytest.raises(TypeError, match="text"):
        pool.map([[("fine", "en", False)], [(3, "en", False)]], lambda share: [["fine"]])
    assert pool.map([[], [("still works", "en", False)]], lambda share: []) == [["still", "works"]]

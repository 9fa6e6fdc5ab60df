"""Forked worker processes that run the Python pre-tokenizer on shares of a large batch.

The pre-tokenizer (sacremoses) holds the GIL, so only processes put more cores on it; the BPE
core that follows runs in C++ threads and needs no pool.
"""

import threading

from .pre_tokenizer import XLMPreTokenizer


def _pre_tokenizer_worker(connection, do_lowercase_and_remove_accent):
    """Worker process loop: receives [(text, lang, bypass)], sends back ("ok", word lists) or
    ("error", exception); None stops it."""
    pre = XLMPreTokenizer(do_lowercase_and_remove_accent)
    while True:
        items = connection.recv()
        if items is None:
            return
        try:
            connection.send(("ok", [pre(text, lang, bypass) for text, lang, bypass in items]))
        except Exception as error:  # noqa: BLE001 - re-raised in the caller
            connection.send(("error", error))


class _PreTokenizerPool:
    """Forked processes that run the Python front on shares of a batch. Talks to each over its
    own pipe from the calling thread: a pool with feeder threads (concurrent.futures,
    multiprocessing.Pool) waits for the GIL that this thread holds while it runs its own share."""

    def __init__(self, size, do_lowercase_and_remove_accent):
        import multiprocessing
        import weakref

        context = multiprocessing.get_context("fork")
        self.size = size
        self._lock = threading.Lock()
        self._connections = []
        for _ in range(size):
            parent, child = context.Pipe()
            context.Process(target=_pre_tokenizer_worker, args=(child, do_lowercase_and_remove_accent),
                            daemon=True).start()
            child.close()
            self._connections.append(parent)
        weakref.finalize(self, _PreTokenizerPool._stop, self._connections)

    @staticmethod
    def _stop(connections):
        for connection in connections:
            try:
                connection.send(None)
                connection.close()
            except OSError:
                pass

    def map(self, shares, local):
        """Word lists of shares[0] (computed here by `local`) + shares[1:] (in the workers)."""
        with self._lock:
            for connection, share in zip(self._connections, shares[1:]):
                connection.send(share)
            words = local(shares[0])
            replies = [connection.recv() for connection in self._connections[: len(shares) - 1]]
        for status, payload in replies:
            if status == "error":
                raise payload
            words.extend(payload)
        return words

// Whole-batch encoder of XLMTokenizer.__call__: sequences (texts, or words already split by
// the Python pre-tokenizer) -> BPE ids, added/special tokens, truncation (overflow windows
// included), padding and the optional fields, written into flat int64 buffers that the
// binding hands to numpy without a copy. Pure C++: runs without the GIL, threaded over the
// sequences of the batch. Semantics are those of xlm_fast/tokenization_xlm.py's Python path
// (the reference), i.e. transformers' XLMTokenizer.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bpe.h"
#include "spanned_text.h"

namespace xlm_fast {

// Pre-tokenizer of a text piece (code points, no added tokens in it): its words into `out`
// (buffers reused), spans relative to the piece. Must be thread-safe: the workers of a batch
// call it concurrently, each with its own `out`.
using PreTokenize = std::function<void(std::u32string_view, PreTokenized&)>;

// bypass_tokenizer=True: Python's str.split() (split on whitespace, no other change).
class WhitespaceSplit {
public:
    // `spaces`: every code point for which Python's str.isspace() is True.
    explicit WhitespaceSplit(const std::vector<uint32_t>& spaces);
    void operator()(std::u32string_view text, PreTokenized& out) const;

private:
    bool is_space(char32_t code) const;
    std::vector<char32_t> spaces_;  // sorted
    bool ascii_[128] = {};
};

// Added tokens (special tokens and add_tokens'), never split: the text is cut at the leftmost
// match, the longest one at that position (xlm_fast/added_tokens.py's regex).
class AddedTokens {
public:
    explicit AddedTokens(const std::vector<std::pair<std::u32string, int32_t>>& tokens);

    struct Piece {
        size_t start, end;  // code points of the text
        int32_t id;         // the added token's id, -1 for text between added tokens
    };
    // Non-empty pieces of `text`, in order.
    void split(std::u32string_view text, std::vector<Piece>& out) const;

private:
    std::vector<std::pair<std::u32string, int32_t>> tokens_;
    std::unordered_map<char32_t, std::vector<size_t>> by_first_;  // first code point -> tokens, longest first
};

// One sequence as the Python pre-tokenizer left it: segments that are an added token's id or
// a run of words (id -1), and optionally the source span of every code point of the words.
struct WordSequence {
    struct Segment {
        int32_t id;
        size_t words_begin, words_end;  // into `words`
        int64_t start;                  // source offset of an added token (its span: start + its length)
        int64_t length;
    };
    std::vector<Segment> segments;
    std::vector<std::string> words;
    std::vector<Span> spans;  // per code point of `words`, in order; empty: no offsets
};

enum class Truncation { kNone, kLongestFirst, kOnlyFirst, kOnlySecond };
enum class Padding { kNone, kLongest, kMaxLength };

struct EncodeOptions {
    bool add_special_tokens = true;
    int32_t bos_id = 0, sep_id = 0, pad_id = 0;
    Truncation truncation = Truncation::kNone;
    int64_t max_length = -1;  // -1: none
    int64_t stride = 0;
    bool truncate_left = false;
    bool overflow = false;  // return_overflowing_tokens: one row per window
    Padding padding = Padding::kNone;
    int64_t pad_to_multiple_of = 0;  // 0: none
    bool pad_left = false;
    bool token_type_ids = false, special_tokens_mask = false, attention_mask = true, offsets = false;
    int num_threads = 1;
};

// Rows (one per input, or per overflow window) laid out back to back: row r is
// [row_starts[r], row_starts[r + 1]) of every per-token buffer (offsets: 2 values a token).
struct BatchOutput {
    std::vector<int64_t> row_starts;
    std::vector<int64_t> input_ids, token_type_ids, special_tokens_mask, attention_mask, offsets;
    std::vector<int64_t> lengths;  // per row, before padding
    std::vector<int64_t> samples;  // per row, the input it came from
    // Per row kLayoutWidth values: first source, start, stop; second source (-1: none), start,
    // stop; padding added. A source is an encoded sequence: k < n the k-th text, n + k its pair.
    static constexpr size_t kLayoutWidth = 7;
    std::vector<int64_t> layouts;
    // Word id of every token of each source before truncation: source s is
    // word_ids[word_starts[s] .. word_starts[s + 1]).
    std::vector<int64_t> word_ids, word_starts;
};

// `texts` holds n first sequences then, when `pairs`, n second ones. Up to
// options.num_threads threads, each given at least `min_chars_per_thread` code points (what
// pays for a thread's start with this pre-tokenizer). Throws std::invalid_argument (a
// ValueError in Python) for options the inputs cannot meet.
BatchOutput encode_texts(BPEModel& model, const AddedTokens& added, const PreTokenize& pre_tokenize,
                         size_t min_chars_per_thread, const std::vector<std::u32string>& texts, bool pairs,
                         const EncodeOptions& options);
BatchOutput encode_words(BPEModel& model, const std::vector<WordSequence>& sequences, bool pairs,
                         const EncodeOptions& options);

}  // namespace xlm_fast

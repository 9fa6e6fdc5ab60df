// Text that carries, for every code point, the span of the caller's original text it came
// from: what the pre-tokenizers (csrc/moses.h, WhitespaceSplit) hand to the batch encoder
// (csrc/batch_encoder.h), which turns the spans into token offsets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace xlm_fast {

// [start, end) code-point offsets (Python str indices) into the original text.
struct Span {
    int64_t start;
    int64_t end;
};

// Code points and one source span per code point. `end` is the source offset just past the
// text (the place of an insertion into an empty buffer).
struct SpannedText {
    std::u32string chars;
    std::vector<Span> spans;
    int64_t end = 0;
};

// A pre-tokenizer's words: runs of `text`, so that a text is split into words without a
// copy per word. Reused across calls by one thread (the buffers keep their capacity).
struct PreTokenized {
    struct Bounds {
        size_t begin, end;  // [begin, end) code points of text
    };
    SpannedText text;
    std::vector<Bounds> words;
};

}  // namespace xlm_fast

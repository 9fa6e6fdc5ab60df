#include "batch_encoder.h"

#include "parallel_for.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace xlm_fast {

// ----------------------------------------------------------------------------- pre-tokenizers

WhitespaceSplit::WhitespaceSplit(const std::vector<uint32_t>& spaces) : spaces_(spaces.begin(), spaces.end()) {
    std::sort(spaces_.begin(), spaces_.end());
    for (char32_t code : spaces_)
        if (code < 128) ascii_[code] = true;
}

bool WhitespaceSplit::is_space(char32_t code) const {
    if (code < 128) return ascii_[code];
    return std::binary_search(spaces_.begin(), spaces_.end(), code);
}

void WhitespaceSplit::operator()(std::u32string_view text, PreTokenized& out) const {
    out.text.chars.assign(text.begin(), text.end());
    out.text.spans.resize(text.size());
    for (size_t i = 0; i < text.size(); ++i) out.text.spans[i] = {static_cast<int64_t>(i), static_cast<int64_t>(i) + 1};
    out.text.end = static_cast<int64_t>(text.size());
    out.words.clear();
    for (size_t i = 0; i < text.size();) {
        if (is_space(text[i])) {
            ++i;
            continue;
        }
        const size_t begin = i;
        while (i < text.size() && !is_space(text[i])) ++i;
        out.words.push_back({begin, i});
    }
}

AddedTokens::AddedTokens(const std::vector<std::pair<std::u32string, int32_t>>& tokens) {
    for (const auto& token : tokens)
        if (!token.first.empty()) tokens_.push_back(token);
    for (size_t i = 0; i < tokens_.size(); ++i) by_first_[tokens_[i].first[0]].push_back(i);
    for (auto& item : by_first_)  // longest first; stable, as Python's sorted(key=len, reverse=True)
        std::stable_sort(item.second.begin(), item.second.end(),
                         [this](size_t a, size_t b) { return tokens_[a].first.size() > tokens_[b].first.size(); });
}

void AddedTokens::split(std::u32string_view text, std::vector<Piece>& out) const {
    size_t piece_start = 0;
    for (size_t i = 0; i < text.size();) {
        const auto found = by_first_.empty() ? by_first_.end() : by_first_.find(text[i]);
        const std::pair<std::u32string, int32_t>* match = nullptr;
        if (found != by_first_.end())
            for (size_t index : found->second) {
                const std::u32string& token = tokens_[index].first;
                if (text.substr(i, token.size()) == token) {
                    match = &tokens_[index];
                    break;
                }
            }
        if (match == nullptr) {
            ++i;
            continue;
        }
        if (i > piece_start) out.push_back({piece_start, i, -1});
        out.push_back({i, i + match->first.size(), match->second});
        i += match->first.size();
        piece_start = i;
    }
    if (text.size() > piece_start) out.push_back({piece_start, text.size(), -1});
}

namespace {

// ----------------------------------------------------------------------------- sequences

// One source sequence encoded, before special tokens and truncation.
struct Encoded {
    std::vector<int32_t> ids;
    std::vector<Span> offsets;      // per token, when offsets are built
    std::vector<int64_t> word_ids;  // per token: pre-tokenizer words and added tokens, counted in order
};

// Per-thread buffers, reused across the sequences one worker encodes.
struct Scratch {
    BPEModel::Scratch bpe;
    std::vector<AddedTokens::Piece> pieces;
    PreTokenized words;
    std::string utf8;                    // the word being encoded
    std::vector<uint32_t> char_of_byte;  // its code point (index in the word) of each byte
};

// BPE of one word of `chars` code points (> 0) whose spans are char_spans[0 .. chars), shifted
// by `shift`: ids, offsets and word ids appended. A BPE token covers code points [c0, c1] of
// the word; its offsets run from c0's span start to c1's span end.
void encode_word_with_offsets(BPEModel& model, std::string_view utf8, size_t chars, const Span* char_spans,
                              int64_t shift, int64_t word, Scratch& scratch, Encoded& out) {
    // Code point of each byte; none needed when every code point is one byte (ASCII).
    const bool one_byte_each = utf8.size() == chars;
    std::vector<uint32_t>& char_of_byte = scratch.char_of_byte;
    if (!one_byte_each) {
        char_of_byte.clear();
        for (size_t pos = 0, c = 0; pos < utf8.size(); ++c) {
            const size_t length = std::min(utf8_length(static_cast<unsigned char>(utf8[pos])), utf8.size() - pos);
            char_of_byte.insert(char_of_byte.end(), length, static_cast<uint32_t>(std::min(c, chars - 1)));
            pos += length;
        }
    }
    const auto char_at = [&](size_t byte) { return one_byte_each ? byte : size_t(char_of_byte[byte]); };  // < size
    model.encode_word(utf8, scratch.bpe);
    const WordEncoding& encoding = scratch.bpe.encoding;
    for (size_t t = 0; t < encoding.ids.size(); ++t) {
        const size_t begin = encoding.spans[t].first, end = std::min<size_t>(encoding.spans[t].second, utf8.size());
        const size_t c0 = begin < utf8.size() ? char_at(begin) : chars - 1;
        const int64_t from = char_spans[c0].start + shift;
        const int64_t to = end > begin ? char_spans[char_at(end - 1)].end + shift
                                       : from;  // an empty token (a word with a space)
        out.ids.push_back(encoding.ids[t]);
        out.offsets.push_back({from, to});
        out.word_ids.push_back(word);
    }
}

// Text -> ids (+ offsets) and word ids.
void encode_text(BPEModel& model, const AddedTokens& added, const PreTokenize& pre_tokenize, std::u32string_view text,
                 bool offsets, Scratch& scratch, Encoded& out) {
    scratch.pieces.clear();
    added.split(text, scratch.pieces);
    int64_t word = 0;
    for (const auto& piece : scratch.pieces) {
        const auto start = static_cast<int64_t>(piece.start);
        if (piece.id >= 0) {
            out.ids.push_back(piece.id);
            out.word_ids.push_back(word++);
            if (offsets) out.offsets.push_back({start, static_cast<int64_t>(piece.end)});
            continue;
        }
        pre_tokenize(text.substr(piece.start, piece.end - piece.start), scratch.words);
        const SpannedText& pre = scratch.words.text;
        for (const PreTokenized::Bounds& bounds : scratch.words.words) {
            std::string& utf8 = scratch.utf8;
            utf8.clear();
            for (size_t c = bounds.begin; c < bounds.end; ++c) append_code_point(pre.chars[c], utf8);
            if (utf8.size() > kMaxWordBytes) throw std::invalid_argument("a word is too long for BPE");
            if (offsets) {
                encode_word_with_offsets(model, utf8, bounds.end - bounds.begin, pre.spans.data() + bounds.begin,
                                         start, word++, scratch, out);
                continue;
            }
            const size_t before = out.ids.size();
            model.encode_word(utf8, scratch.bpe, out.ids);
            out.word_ids.insert(out.word_ids.end(), out.ids.size() - before, word++);
        }
    }
}

// Words -> ids (+ offsets when the sequence has spans) and word ids.
void encode_word_sequence(BPEModel& model, const WordSequence& sequence, bool offsets, Scratch& scratch,
                          Encoded& out) {
    int64_t word = 0;
    const Span* spans = sequence.spans.data();  // of the next word's first code point
    for (const auto& segment : sequence.segments) {
        if (segment.id >= 0) {
            out.ids.push_back(segment.id);
            out.word_ids.push_back(word++);
            if (offsets) out.offsets.push_back({segment.start, segment.start + segment.length});
            continue;
        }
        for (size_t w = segment.words_begin; w < segment.words_end; ++w) {
            const std::string& utf8 = sequence.words[w];
            if (offsets) {
                size_t chars = 0;
                for (size_t pos = 0; pos < utf8.size(); pos += utf8_length(static_cast<unsigned char>(utf8[pos])))
                    ++chars;
                if (chars == 0) throw std::invalid_argument("encode_words: an empty word has no offsets");
                encode_word_with_offsets(model, utf8, chars, spans, 0, word++, scratch, out);
                spans += chars;
                continue;
            }
            const size_t before = out.ids.size();
            model.encode_word(utf8, scratch.bpe, out.ids);
            out.word_ids.insert(out.word_ids.end(), out.ids.size() - before, word++);
        }
    }
}

// Threads worth starting for `work` units of `count` sequences: each must get at least
// `min_work` units, the work that pays for a thread's start, wake-up and join (~20-50 us).
size_t useful_threads(size_t work, size_t min_work, size_t count, int num_threads) {
    return std::max<size_t>(1, std::min({static_cast<size_t>(std::max(1, num_threads)), count,
                                         work / std::max<size_t>(1, min_work)}));
}

// BPE alone (encode_words): ~0.03 us a byte (+1 a word), so 4096 bytes a thread.
constexpr size_t kMinBpeBytesPerThread = 4096;

// ----------------------------------------------------------------------------- rows

struct Range {
    int64_t start, stop;
    int64_t size() const { return stop - start; }
};

// [start, stop) left of `length` tokens after removing `remove` on one side.
Range cut(int64_t length, int64_t remove, bool left) {
    remove = std::min(remove, length);
    return left ? Range{remove, length} : Range{0, length - remove};
}

// tokenization_utils_base.truncation_bounds; second < 0: no pair.
std::pair<Range, Range> truncation_bounds(int64_t first, int64_t second, int64_t remove, Truncation strategy,
                                          bool left) {
    const Range whole_first{0, first}, whole_second{0, std::max<int64_t>(second, 0)};
    if (strategy == Truncation::kOnlyFirst || (strategy == Truncation::kLongestFirst && second < 0))
        return {cut(first, remove, left), whole_second};
    if (strategy == Truncation::kLongestFirst) {
        const int64_t first_remove = std::min(std::abs(second - first), remove);
        const int64_t half = (remove - first_remove) / 2;
        const int64_t ids_remove = first > second ? first_remove + half : half;
        const int64_t pair_remove = first > second ? remove - first_remove - half : remove - half;
        return {cut(first, ids_remove, left), second > 0 ? cut(second, pair_remove, left) : whole_second};
    }
    if (strategy == Truncation::kOnlySecond && second > 0) return {whole_first, cut(second, remove, left)};
    return {whole_first, whole_second};
}

// tokenization_utils_base.overflow_windows.
std::vector<Range> overflow_windows(int64_t length, int64_t room, int64_t stride, bool left) {
    if (length <= room) return {{0, length}};
    const int64_t step = room - stride;
    std::vector<Range> windows;
    if (!left) {
        for (int64_t start = 0; start < length; start += step) {
            windows.push_back({start, std::min(start + room, length)});
            if (start + room >= length) break;
        }
        return windows;
    }
    for (int64_t stop = length; stop > 0; stop -= step) {
        windows.push_back({std::max<int64_t>(stop - room, 0), stop});
        if (stop <= room) break;
    }
    return windows;
}

// XLMTokenizer._windows: (first, second) bounds per overflow window.
std::vector<std::pair<Range, Range>> windows_of(int64_t first, int64_t second, int64_t remove,
                                                const EncodeOptions& options) {
    if (options.truncation == Truncation::kLongestFirst && second >= 0)
        throw std::invalid_argument(
            "return_overflowing_tokens=True with a pair needs truncation='only_first' or 'only_second' (as in "
            "transformers), got truncation='longest_first'/True");
    if (options.truncation == Truncation::kOnlySecond && second < 0)
        throw std::invalid_argument("truncation='only_second' with return_overflowing_tokens=True needs text_pair");
    const bool on_second = options.truncation == Truncation::kOnlySecond;
    const int64_t target = on_second ? second : first;
    const int64_t room = target - remove;
    if (room <= options.stride)
        throw std::invalid_argument("max_length leaves " + std::to_string(std::max<int64_t>(room, 0)) +
                                    " tokens per window to the truncated sequence, which must be more than stride=" +
                                    std::to_string(options.stride) + ": raise max_length or lower stride");
    std::vector<std::pair<Range, Range>> out;
    for (const Range& window : overflow_windows(target, room, options.stride, options.truncate_left))
        out.push_back(on_second ? std::make_pair(Range{0, first}, window)
                                : std::make_pair(window, Range{0, std::max<int64_t>(second, 0)}));
    return out;
}

// Appends `count` copies of `value`.
void fill(std::vector<int64_t>& out, size_t count, int64_t value) { out.insert(out.end(), count, value); }

// One row: [<s>] first [</s>] [second </s>], every asked-for field, unpadded.
void append_row(const Encoded& first, const Encoded* second, Range a, Range b, const EncodeOptions& options,
                BatchOutput& out) {
    const bool special = options.add_special_tokens;
    const size_t na = static_cast<size_t>(a.size()), nb = second ? static_cast<size_t>(b.size()) : 0;
    auto ids = [&](const Encoded& source, Range range) {
        out.input_ids.insert(out.input_ids.end(), source.ids.begin() + range.start, source.ids.begin() + range.stop);
        if (options.offsets)
            for (int64_t i = range.start; i < range.stop; ++i) {
                out.offsets.push_back(source.offsets[i].start);
                out.offsets.push_back(source.offsets[i].end);
            }
    };
    auto special_token = [&](int32_t id) {
        out.input_ids.push_back(id);
        if (options.offsets) fill(out.offsets, 2, 0);
    };
    if (special) special_token(options.bos_id);
    ids(first, a);
    if (special) special_token(options.sep_id);
    if (second) {
        ids(*second, b);
        if (special) special_token(options.sep_id);
    }
    if (options.token_type_ids) {
        fill(out.token_type_ids, na + (special ? 2 : 0), 0);
        if (second) fill(out.token_type_ids, nb + (special ? 1 : 0), special ? 1 : 0);
    }
    if (options.special_tokens_mask) {
        if (special) out.special_tokens_mask.push_back(1);
        fill(out.special_tokens_mask, na, 0);
        if (special) out.special_tokens_mask.push_back(1);
        if (second) {
            fill(out.special_tokens_mask, nb, 0);
            if (special) out.special_tokens_mask.push_back(1);
        }
    }
}

// Pads row r of `values` (width values a token) from `length` to `target` tokens with `value`.
void pad_row(std::vector<int64_t>& values, size_t begin, size_t length, size_t target, int64_t value, bool left,
             size_t width = 1) {
    const size_t missing = (target - length) * width;
    values.insert(left ? values.begin() + static_cast<std::ptrdiff_t>(begin * width) : values.end(), missing, value);
}

BatchOutput assemble(const std::vector<Encoded>& encoded, bool pairs, const EncodeOptions& options) {
    const size_t n = pairs ? encoded.size() / 2 : encoded.size();
    BatchOutput out;
    // Room for the rows without overflow windows (a hint: the buffers grow past it if need be).
    size_t tokens = 0;
    for (const Encoded& source : encoded) tokens += source.ids.size() + (options.add_special_tokens ? 2 : 0);
    out.input_ids.reserve(tokens);
    if (options.token_type_ids) out.token_type_ids.reserve(tokens);
    if (options.special_tokens_mask) out.special_tokens_mask.reserve(tokens);
    if (options.offsets) out.offsets.reserve(2 * tokens);
    out.row_starts.reserve(n + 1);
    out.lengths.reserve(n);
    out.samples.reserve(n);
    out.layouts.reserve(n * BatchOutput::kLayoutWidth);
    out.word_ids.reserve(tokens);
    out.word_starts.reserve(encoded.size() + 1);
    out.word_starts.push_back(0);
    for (const Encoded& source : encoded) {
        out.word_ids.insert(out.word_ids.end(), source.word_ids.begin(), source.word_ids.end());
        out.word_starts.push_back(static_cast<int64_t>(out.word_ids.size()));
    }
    // Unpadded rows first (each appended at the end of the buffers), then padding.
    out.row_starts.push_back(0);
    for (size_t k = 0; k < n; ++k) {
        const Encoded& first = encoded[k];
        const Encoded* second = pairs ? &encoded[n + k] : nullptr;
        const auto first_size = static_cast<int64_t>(first.ids.size());
        const int64_t second_size = second ? static_cast<int64_t>(second->ids.size()) : -1;
        const int64_t specials = options.add_special_tokens ? (second ? 3 : 2) : 0;
        const int64_t total = first_size + std::max<int64_t>(second_size, 0) + specials;
        std::vector<std::pair<Range, Range>> bounds{{Range{0, first_size}, Range{0, std::max<int64_t>(second_size, 0)}}};
        if (options.truncation != Truncation::kNone && options.max_length > 0 && total > options.max_length) {
            const int64_t remove = total - options.max_length;
            if (options.overflow)
                bounds = windows_of(first_size, second_size, remove, options);
            else
                bounds = {truncation_bounds(first_size, second_size, remove, options.truncation,
                                            options.truncate_left)};
        }
        for (const auto& [a, b] : bounds) {
            append_row(first, second, a, b, options, out);
            out.row_starts.push_back(static_cast<int64_t>(out.input_ids.size()));
            out.lengths.push_back(out.row_starts.back() - out.row_starts[out.row_starts.size() - 2]);
            out.samples.push_back(static_cast<int64_t>(k));
            const int64_t second_source = second ? static_cast<int64_t>(n + k) : -1;
            out.layouts.insert(out.layouts.end(),
                               {static_cast<int64_t>(k), a.start, a.stop, second_source, b.start, b.stop, 0});
        }
    }
    const size_t rows = out.lengths.size();
    if (options.attention_mask) fill(out.attention_mask, out.input_ids.size(), 1);

    int64_t target = -1;
    if (options.padding == Padding::kLongest)
        target = rows ? *std::max_element(out.lengths.begin(), out.lengths.end()) : 0;
    else if (options.padding == Padding::kMaxLength)
        target = options.max_length;
    if (target >= 0 && options.pad_to_multiple_of > 0 && target % options.pad_to_multiple_of)
        target = (target / options.pad_to_multiple_of + 1) * options.pad_to_multiple_of;
    bool padded = false;
    for (size_t r = 0; r < rows; ++r) padded = padded || out.lengths[r] < target;
    if (!padded) return out;

    // Rebuild the buffers row by row with the padding in place.
    BatchOutput unpadded = std::move(out);
    out = BatchOutput{};
    out.word_ids = std::move(unpadded.word_ids);
    out.word_starts = std::move(unpadded.word_starts);
    out.lengths = std::move(unpadded.lengths);
    out.samples = std::move(unpadded.samples);
    out.layouts = std::move(unpadded.layouts);
    const auto padded_tokens = rows * static_cast<size_t>(target);
    out.input_ids.reserve(padded_tokens);
    if (options.token_type_ids) out.token_type_ids.reserve(padded_tokens);
    if (options.special_tokens_mask) out.special_tokens_mask.reserve(padded_tokens);
    if (options.attention_mask) out.attention_mask.reserve(padded_tokens);
    if (options.offsets) out.offsets.reserve(2 * padded_tokens);
    out.row_starts.reserve(rows + 1);
    out.row_starts.push_back(0);
    const bool left = options.pad_left;
    auto copy = [&](const std::vector<int64_t>& from, std::vector<int64_t>& to, size_t r, size_t length, int64_t pad,
                    size_t width) {
        const size_t begin = to.size() / width;
        to.insert(to.end(), from.begin() + unpadded.row_starts[r] * width,
                  from.begin() + (unpadded.row_starts[r] + length) * width);
        if (static_cast<int64_t>(length) < target) pad_row(to, begin, length, static_cast<size_t>(target), pad, left,
                                                           width);
    };
    for (size_t r = 0; r < rows; ++r) {
        const auto length = static_cast<size_t>(out.lengths[r]);
        copy(unpadded.input_ids, out.input_ids, r, length, options.pad_id, 1);
        if (options.token_type_ids) copy(unpadded.token_type_ids, out.token_type_ids, r, length, 0, 1);
        if (options.special_tokens_mask) copy(unpadded.special_tokens_mask, out.special_tokens_mask, r, length, 1, 1);
        if (options.attention_mask) copy(unpadded.attention_mask, out.attention_mask, r, length, 0, 1);
        if (options.offsets) copy(unpadded.offsets, out.offsets, r, length, 0, 2);
        out.row_starts.push_back(static_cast<int64_t>(out.input_ids.size()));
        out.layouts[r * BatchOutput::kLayoutWidth + 6] = std::max<int64_t>(0, target - out.lengths[r]);
    }
    return out;
}

}  // namespace

BatchOutput encode_texts(BPEModel& model, const AddedTokens& added, const PreTokenize& pre_tokenize,
                         size_t min_chars_per_thread, const std::vector<std::u32string>& texts, bool pairs,
                         const EncodeOptions& options) {
    std::vector<Encoded> encoded(texts.size());
    size_t work = 0;
    for (const auto& text : texts) work += text.size();
    parallel_for<Scratch>(texts.size(), useful_threads(work, min_chars_per_thread, texts.size(), options.num_threads),
                 [&](size_t i, Scratch& scratch) {
                     Encoded local;  // filled apart: neighbours in `encoded` belong to other threads
                     encode_text(model, added, pre_tokenize, texts[i], options.offsets, scratch, local);
                     encoded[i] = std::move(local);
                 });
    return assemble(encoded, pairs, options);
}

BatchOutput encode_words(BPEModel& model, const std::vector<WordSequence>& sequences, bool pairs,
                         const EncodeOptions& options) {
    std::vector<Encoded> encoded(sequences.size());
    size_t work = 0;
    for (const auto& sequence : sequences)
        for (const auto& word : sequence.words) work += word.size() + 1;
    parallel_for<Scratch>(sequences.size(),
                          useful_threads(work, kMinBpeBytesPerThread, sequences.size(), options.num_threads),
                 [&](size_t i, Scratch& scratch) {
                     Encoded local;
                     encode_word_sequence(model, sequences[i], options.offsets, scratch, local);
                     encoded[i] = std::move(local);
                 });
    return assemble(encoded, pairs, options);
}

}  // namespace xlm_fast

// XLM's pre-BPE pipeline for the Moses languages with source offsets (see moses.h), and its
// binding xlm_fast._C.MosesPipeline / MosesUnicodeTables (register_moses).
//
// Every regex substitution of sacremoses becomes one `rewrite` pass: at each position a
// matcher either consumes a match (writing its replacement) or the character is copied.
// That is re.sub's left-to-right, non-overlapping scan; each matcher below names the
// pattern it reproduces, including the backtracking cases. A pass names the character that
// every match has at a fixed offset (its trigger), so that only those positions are tried.
#include "moses.h"

#include "parallel_for.h"

#include "utf8.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <map>
#include <tuple>
#include <stdexcept>

namespace xlm_moses {

namespace {

constexpr char32_t kMaxCodePoint = 0x10FFFF;
constexpr char32_t kCapitalSigma = 0x03A3, kSmallSigma = 0x03C3, kFinalSigma = 0x03C2;

// A per-thread spare buffer: a pass writes into the buffer that the pass before it read
// from, so that a thread allocates only while its texts grow. Buffers over kMaxSpare
// characters are freed rather than kept.
constexpr size_t kMaxSpare = size_t(1) << 16;

SpannedText& spare() {
    thread_local SpannedText buffer;
    return buffer;
}

SpannedText take_spare() {
    SpannedText buffer = std::move(spare());
    buffer.chars.clear();
    buffer.spans.clear();
    return buffer;
}

void recycle(SpannedText&& used) {
    if (used.chars.capacity() <= kMaxSpare && used.spans.capacity() <= kMaxSpare) spare() = std::move(used);
}

// Output of one pass over `in`: characters with spans, see moses.h for the span rules.
// Most passes change nothing on most texts, so the output is kept implicit while it equals
// a prefix of the input (every write so far a copy of the next input character) and is
// materialised only at the first other write: an unchanged text costs no copy.
class Writer {
public:
    explicit Writer(const SpannedText& in) : in_(in) {}
    [[gnu::always_inline]] void copy(size_t i) {  // the common case of every pass: inlined
        if (!materialized_ && i == same_) ++same_;
        else put(in_.chars[i], in_.spans[i]);
    }
    void copy(size_t i, size_t count) { copy_range(i, i + count); }
    void copy_range(size_t first, size_t last) {  // input [first, last)
        if (first >= last) return;
        if (!materialized_ && first == same_) {
            same_ = last;
            return;
        }
        if (!materialized_) materialize();
        out_.chars.append(in_.chars, first, last - first);
        out_.spans.insert(out_.spans.end(), in_.spans.begin() + first, in_.spans.begin() + last);
    }
    void put(char32_t c, Span span) {
        if (!materialized_) materialize();
        out_.chars.push_back(c);
        out_.spans.push_back(span);
    }
    // A character that replaces nothing, written before input position `next`: empty span
    // at the end of what is written so far (or, where that overlaps `next`, the overlap).
    void insert(char32_t c, size_t next) {
        if (!materialized_) materialize();
        const int64_t next_start = next < in_.chars.size() ? in_.spans[next].start : in_.end;
        const int64_t at = out_.spans.empty() ? next_start : out_.spans.back().end;
        put(c, Span{std::min(at, next_start), at});
    }
    // Span covering input [i, i + count), count >= 1.
    Span run(size_t i, size_t count) const {
        Span span = in_.spans[i];
        for (size_t k = 1; k < count; ++k) span.end = std::max(span.end, in_.spans[i + k].end);
        return span;
    }
    // Whether the output is the whole input, unchanged.
    bool unchanged() const { return !materialized_ && same_ == in_.chars.size(); }
    SpannedText take() {
        if (!materialized_) materialize();
        return std::move(out_);
    }

private:
    [[gnu::noinline]] void materialize() {
        materialized_ = true;
        out_ = take_spare();
        out_.end = in_.end;
        out_.chars.reserve(in_.chars.size() + in_.chars.size() / 4 + 8);
        out_.spans.reserve(out_.chars.capacity());
        out_.chars.assign(in_.chars, 0, same_);
        out_.spans.assign(in_.spans.begin(), in_.spans.begin() + same_);
    }

    const SpannedText& in_;
    SpannedText out_;
    size_t same_ = 0;  // while not materialised, the output is in_[0, same_)
    bool materialized_ = false;
};

// One re.sub-like pass. `match(in, i, out)` returns how many input characters it consumed
// from i (after writing their replacement), 0 when nothing matches at i. `trigger` is a
// character that every match has at `offset` from its start: only those starts are tried
// (the characters between are copied in bulk); trigger 0: every position is tried.
template <class Match>
SpannedText rewrite(SpannedText in, char32_t trigger, size_t offset, Match match) {
    Writer out(in);
    const size_t n = in.chars.size();
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        if (trigger != 0) {
            const size_t found = in.chars.find(trigger, i + offset);
            if (found == std::u32string::npos) break;
            start = found - offset;
            out.copy_range(i, start);
        }
        const size_t used = match(in, start, out);
        if (used == 0) out.copy(start++);
        i = start + used;
    }
    out.copy_range(i, n);
    if (out.unchanged()) return in;
    SpannedText result = out.take();
    recycle(std::move(in));
    return result;
}

bool ascii_letter(char32_t c) { return (c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z'); }

// Input characters [first, last) as their own text.
SpannedText slice(const SpannedText& text, size_t first, size_t last) {
    SpannedText out;
    out.chars.assign(text.chars, first, last - first);
    out.spans.assign(text.spans.begin() + first, text.spans.begin() + last);
    out.end = last < text.chars.size() ? text.spans[last].start : text.end;
    if (last > first) out.end = std::max(out.end, out.spans.back().end);
    return out;
}

// Appends `part` after `text`, with `sep` (an inserted character) in between when sep != 0.
void append(SpannedText& text, const SpannedText& part, char32_t sep) {
    if (sep != 0) {
        const int64_t at = text.spans.empty() ? (part.spans.empty() ? part.end : part.spans.front().start)
                                              : text.spans.back().end;
        const int64_t next = part.spans.empty() ? at : part.spans.front().start;
        text.chars.push_back(sep);
        text.spans.push_back(Span{std::min(at, next), at});
    }
    text.chars += part.chars;
    text.spans.insert(text.spans.end(), part.spans.begin(), part.spans.end());
    text.end = std::max(text.end, part.end);
}

// The non-empty runs of `text` between separators (a predicate on characters).
template <class Separator>
std::vector<SpannedText> split_words(const SpannedText& text, Separator separator) {
    std::vector<SpannedText> words;
    for (size_t i = 0; i < text.chars.size();) {
        if (separator(text.chars[i])) { ++i; continue; }
        size_t j = i;
        while (j < text.chars.size() && !separator(text.chars[j])) ++j;
        words.push_back(slice(text, i, j));
        i = j;
    }
    return words;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Unicode tables

UnicodeTables::UnicodeTables(const UnicodeData& data)
    : properties_(data.properties),
      lowercase_(data.lowercase.begin(), data.lowercase.end()),
      nfd_(data.nfd.begin(), data.nfd.end()),
      combining_(data.combining.begin(), data.combining.end()) {
    if (properties_.size() != kMaxCodePoint + 1)
        throw std::invalid_argument("properties must hold one byte per code point (0x110000)");
    for (uint8_t& bits : properties_) bits &= uint8_t(~(kLowerChanges | kNfdOrCombining));
    const auto mark = [this](char32_t c, Property bit) {
        if (c <= kMaxCodePoint) properties_[c] |= bit;
    };
    for (const auto& entry : lowercase_) mark(entry.first, kLowerChanges);
    for (const auto& entry : nfd_) mark(entry.first, kNfdOrCombining);
    for (const auto& entry : combining_) mark(entry.first, kNfdOrCombining);
}

uint8_t UnicodeTables::combining_slow(char32_t c) const {
    const auto it = combining_.find(c);
    return it == combining_.end() ? 0 : it->second;
}

const std::u32string* UnicodeTables::find(const std::unordered_map<char32_t, std::u32string>& map, char32_t c) {
    const auto it = map.find(c);
    return it == map.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------------------------------
// Pipeline

MosesPipeline::MosesPipeline(std::shared_ptr<const UnicodeTables> tables, LanguageData data)
    : tables_(std::move(tables)), data_(std::move(data)), classes_(kMaxCodePoint + 1, 0) {
    if (!tables_) throw std::invalid_argument("tables must not be None");
    const auto mark = [this](const std::u32string& chars, uint8_t bit) {
        for (char32_t c : chars)
            if (c <= kMaxCodePoint) classes_[c] |= bit;
    };
    mark(data_.is_alnum, kAlnum);
    mark(data_.is_alpha, kAlpha);
    mark(data_.is_lower, kLower);
    mark(data_.is_n, kNumber);
    mark(data_.is_sc, kSymbol);
    mark(data_.is_so, kSymbol);
    mark(data_.full_stops, kUnicodePunct);
    for (char32_t c = 0; c <= kMaxCodePoint; ++c)
        if (tables_->has(c, UnicodeTables::kSpace)) classes_[c] |= kSpace;
    unicode_punct_.insert(data_.unicode_punct.begin(), data_.unicode_punct.end());
    for (const auto& entry : data_.unicode_punct)
        if (entry.first <= kMaxCodePoint) classes_[entry.first] |= kUnicodePunct;
    romanian_.insert(data_.romanian.begin(), data_.romanian.end());
    prefixes_.insert(data_.nonbreaking_prefixes.begin(), data_.nonbreaking_prefixes.end());
    numeric_only_.insert(data_.numeric_only_prefixes.begin(), data_.numeric_only_prefixes.end());
    for (const NormalizerRule& rule : data_.normalizer) {
        const bool one_to_one = rule.from.size() == 1 && rule.to.size() == 1;
        if ((rule.kind == NormalizerRule::kLiteral && rule.from.empty()) ||
            ((rule.kind == NormalizerRule::kLetterQuoteLetter || rule.kind == NormalizerRule::kDigitNbspDigit) &&
             !one_to_one) ||
            rule.kind < NormalizerRule::kLiteral || rule.kind > NormalizerRule::kDigitNbspDigit)
            throw std::invalid_argument("malformed normalizer rule");
    }
}

SpannedText MosesPipeline::from_text(std::u32string_view text) {
    SpannedText out;
    out.chars.assign(text.begin(), text.end());
    out.spans.resize(text.size());
    for (size_t i = 0; i < text.size(); ++i) out.spans[i] = Span{int64_t(i), int64_t(i) + 1};
    out.end = int64_t(text.size());
    return out;
}

// XLM's replace_unicode_punct: "[。．]\s*" -> ". ", then the one-character table.
SpannedText MosesPipeline::replace_unicode_punct(SpannedText text) const {
    if (std::none_of(text.chars.begin(), text.chars.end(), [this](char32_t c) { return is(c, kUnicodePunct); }))
        return text;
    const std::u32string& stops = data_.full_stops;
    text = rewrite(std::move(text), 0, 0, [&](const SpannedText& in, size_t i, Writer& out) -> size_t {
        if (!is(in.chars[i], kUnicodePunct) || stops.find(in.chars[i]) == std::u32string::npos) return 0;
        size_t j = i + 1;
        while (j < in.chars.size() && space(in.chars[j])) ++j;
        out.put(U'.', in.spans[i]);
        if (j > i + 1) out.put(U' ', out.run(i + 1, j - i - 1));
        else out.insert(U' ', j);
        return j - i;
    });
    return rewrite(std::move(text), 0, 0, [&](const SpannedText& in, size_t i, Writer& out) -> size_t {
        if (!is(in.chars[i], kUnicodePunct)) return 0;
        const auto it = unicode_punct_.find(in.chars[i]);
        if (it == unicode_punct_.end()) return 0;
        for (char32_t c : it->second) out.put(c, in.spans[i]);
        return 1;
    });
}

namespace {

// A literal substitution from -> to. The common prefix and suffix of the two keep their
// spans (e.g. "(" -> " (" inserts a space); the rest of `to` gets the span of the rest of
// `from`, or is inserted when that is empty.
SpannedText replace_literal(SpannedText text, const std::u32string& from, const std::u32string& to) {
    const size_t shorter = std::min(from.size(), to.size());
    size_t prefix = 0;
    while (prefix < shorter && from[prefix] == to[prefix]) ++prefix;
    size_t suffix = 0;
    while (suffix < shorter - prefix && from[from.size() - 1 - suffix] == to[to.size() - 1 - suffix]) ++suffix;
    const size_t replaced = from.size() - prefix - suffix;
    return rewrite(std::move(text), from[0], 0, [&](const SpannedText& in, size_t i, Writer& out) -> size_t {
        if (in.chars[i] != from[0] || in.chars.compare(i, from.size(), from) != 0) return 0;
        out.copy(i, prefix);
        for (size_t k = prefix; k < to.size() - suffix; ++k) {
            if (replaced > 0) out.put(to[k], out.run(i + prefix, replaced));
            else out.insert(to[k], i + prefix);
        }
        out.copy(i + from.size() - suffix, suffix);
        return from.size();
    });
}

// " +" -> " ": a run of spaces becomes one with the span of the run.
SpannedText squeeze_spaces(SpannedText text) {
    return rewrite(std::move(text), U' ', 0, [](const SpannedText& in, size_t i, Writer& out) -> size_t {
        if (in.chars[i] != U' ') return 0;
        size_t j = i + 1;
        while (j < in.chars.size() && in.chars[j] == U' ') ++j;
        if (j == i + 1) return 0;  // a single space stays as it is
        out.put(U' ', out.run(i, j - i));
        return j - i;
    });
}

// A superset of the characters of a text, to skip the rules that cannot match it: one bit
// per character below 512 (ASCII, Latin-1, ...), hashed into 512 more bits above.
class CharFilter {
public:
    explicit CharFilter(std::u32string_view text) {
        for (char32_t c : text) add(c);
    }
    void add(char32_t c) { bits_[bit(c) / 64] |= uint64_t(1) << (bit(c) % 64); }
    bool has(char32_t c) const { return (bits_[bit(c) / 64] >> (bit(c) % 64)) & 1; }
    bool has_all(std::u32string_view chars) const {
        return std::all_of(chars.begin(), chars.end(), [this](char32_t c) { return has(c); });
    }

private:
    static uint32_t bit(char32_t c) { return c < 512 ? uint32_t(c) : 512 + ((uint32_t(c) * 2654435761u) >> 23); }
    uint64_t bits_[16] = {};
};

// Characters that every match of `rule` contains (NormalizerRule::Kind's patterns).
std::u32string_view trigger(const NormalizerRule& rule) {
    switch (rule.kind) {
    case NormalizerRule::kSpaceRun: return U" ";
    case NormalizerRule::kParenSpacePunct: return U") ";
    case NormalizerRule::kDigitSpacePercent: return U" %";
    case NormalizerRule::kQuoteThenCommas: return U"\"";
    case NormalizerRule::kDotsQuoteSpace: return U".\"";
    default: return rule.from;  // kLiteral, kLetterQuoteLetter, kDigitNbspDigit
    }
}

}  // namespace

// MosesPunctNormalizer.normalize: its substitutions in order, then str.strip().
SpannedText MosesPipeline::normalize_punct(SpannedText text) const {
    const UnicodeTables& u = *tables_;
    const auto decimal = [&u](char32_t c) { return u.has(c, UnicodeTables::kDecimal); };
    // Rules only add the characters of their `to`: adding those keeps `present` a superset.
    CharFilter present(text.chars);
    // " +" changes only runs of two or more spaces: false while the text has none for sure
    // (none at first, or just squeezed and no other rule tried since).
    bool space_runs = text.chars.find(U"  ") != std::u32string::npos;
    for (const NormalizerRule& rule : data_.normalizer) {
        if (!present.has_all(trigger(rule))) continue;
        if (rule.kind == NormalizerRule::kSpaceRun && !space_runs) continue;
        space_runs = rule.kind != NormalizerRule::kSpaceRun;
        for (char32_t c : rule.to) present.add(c);
        switch (rule.kind) {
        case NormalizerRule::kLiteral:
            text = replace_literal(std::move(text), rule.from, rule.to);
            break;
        case NormalizerRule::kSpaceRun:
            text = squeeze_spaces(std::move(text));
            break;
        case NormalizerRule::kParenSpacePunct:  // "\) ([.!:?;,])" -> ")\1"
            text = rewrite(std::move(text), U')', 0, [](const SpannedText& in, size_t i, Writer& out) -> size_t {
                const std::u32string& s = in.chars;
                if (i + 2 >= s.size() || s[i] != U')' || s[i + 1] != U' ' ||
                    std::u32string_view(U".!:?;,").find(s[i + 2]) == std::u32string_view::npos)
                    return 0;
                out.copy(i);
                out.copy(i + 2);
                return 3;
            });
            break;
        case NormalizerRule::kDigitSpacePercent:  // "(\d) %" -> "\1%"
            text = rewrite(std::move(text), U'%', 2, [&](const SpannedText& in, size_t i, Writer& out) -> size_t {
                const std::u32string& s = in.chars;
                if (i + 2 >= s.size() || !decimal(s[i]) || s[i + 1] != U' ' || s[i + 2] != U'%') return 0;
                out.copy(i);
                out.copy(i + 2);
                return 3;
            });
            break;
        case NormalizerRule::kLetterQuoteLetter:  // "([a-zA-Z])<from>([a-zA-Z])" -> "\1<to>\2"
            text = rewrite(std::move(text), rule.from[0], 1,
                           [&](const SpannedText& in, size_t i, Writer& out) -> size_t {
                const std::u32string& s = in.chars;
                if (i + 2 >= s.size() || !ascii_letter(s[i]) || s[i + 1] != rule.from[0] || !ascii_letter(s[i + 2]))
                    return 0;
                out.copy(i);
                out.put(rule.to[0], in.spans[i + 1]);
                out.copy(i + 2);
                return 3;
            });
            break;
        case NormalizerRule::kQuoteThenCommas:  // '"([,.]+)' -> '\1"' (moved: all get the match's span)
            text = rewrite(std::move(text), U'"', 0, [](const SpannedText& in, size_t i, Writer& out) -> size_t {
                const std::u32string& s = in.chars;
                if (s[i] != U'"') return 0;
                size_t j = i + 1;
                while (j < s.size() && (s[j] == U',' || s[j] == U'.')) ++j;
                if (j == i + 1) return 0;
                const Span span = out.run(i, j - i);
                for (size_t k = i + 1; k < j; ++k) out.put(s[k], span);
                out.put(U'"', span);
                return j - i;
            });
            break;
        case NormalizerRule::kDotsQuoteSpace:  // '(\.+)"(\s*[^<])' -> '"\1\2'
            text = rewrite(std::move(text), U'.', 0, [this](const SpannedText& in, size_t i, Writer& out) -> size_t {
                const std::u32string& s = in.chars;
                if (s[i] != U'.') return 0;
                size_t quote = i + 1;
                while (quote < s.size() && s[quote] == U'.') ++quote;
                // Every start inside this run of dots fails alike when this one fails.
                const auto fail = [&] { out.copy(i, quote - i); return quote - i; };
                if (quote >= s.size() || s[quote] != U'"') return fail();
                size_t j = quote + 1;
                while (j < s.size() && space(s[j])) ++j;
                // \s* takes the whole run if a non-'<' follows it, else gives back its last space.
                size_t end;
                if (j < s.size() && s[j] != U'<') end = j + 1;
                else if (j > quote + 1) end = j;
                else return fail();
                const Span span = out.run(i, quote + 1 - i);
                out.put(U'"', span);
                for (size_t k = i; k < quote; ++k) out.put(U'.', span);
                out.copy(quote + 1, end - quote - 1);
                return end - i;
            });
            break;
        case NormalizerRule::kDigitNbspDigit:  // "(\d)\u00A0(\d)" -> "\1<to>\2"
            text = rewrite(std::move(text), 0xA0, 1, [&](const SpannedText& in, size_t i, Writer& out) -> size_t {
                const std::u32string& s = in.chars;
                if (i + 2 >= s.size() || !decimal(s[i]) || s[i + 1] != 0xA0 || !decimal(s[i + 2])) return 0;
                out.copy(i);
                out.put(rule.to[0], in.spans[i + 1]);
                out.copy(i + 2);
                return 3;
            });
            break;
        }
    }
    size_t first = 0, last = text.chars.size();
    while (first < last && space(text.chars[first])) ++first;
    while (last > first && space(text.chars[last - 1])) --last;
    if (first == 0 && last == text.chars.size()) return text;
    return slice(text, first, last);
}

SpannedText MosesPipeline::remove_non_printing_char(SpannedText text) const {
    const auto is_c = [this](char32_t c) { return tables_->has(c, UnicodeTables::kC); };
    if (std::none_of(text.chars.begin(), text.chars.end(), is_c)) return text;
    return rewrite(std::move(text), 0, 0, [&](const SpannedText& in, size_t i, Writer&) -> size_t {
        return is_c(in.chars[i]) ? 1 : 0;
    });
}

SpannedText MosesPipeline::romanian(SpannedText text) const {
    for (char32_t& c : text.chars) {
        const auto it = romanian_.find(c);
        if (it != romanian_.end()) c = it->second;
    }
    return text;
}

SpannedText MosesPipeline::normalize(SpannedText text) const {
    return remove_non_printing_char(normalize_punct(replace_unicode_punct(std::move(text))));
}

// handles_nonbreaking_prefixes: tokens split on whitespace, a final period split off unless
// a prefix rule keeps it, tokens joined by single spaces (inserted, as Writer::insert does).
SpannedText MosesPipeline::nonbreaking_prefixes(const SpannedText& text) const {
    const std::u32string& s = text.chars;
    const size_t n = s.size();
    SpannedText out = take_spare();
    out.end = text.end;
    out.chars.reserve(n + 8);
    out.spans.reserve(n + 8);
    const auto copy = [&](size_t i) {
        out.chars.push_back(s[i]);
        out.spans.push_back(text.spans[i]);
    };
    const auto insert_space = [&](size_t next) {
        const int64_t at = out.spans.back().end;
        out.chars.push_back(U' ');
        out.spans.push_back(Span{std::min(at, text.spans[next].start), at});
    };
    size_t first = 0;
    while (first < n && space(s[first])) ++first;
    while (first < n) {
        size_t last = first;
        while (last < n && !space(s[last])) ++last;
        size_t next = last;  // the next token, n if none
        while (next < n && space(s[next])) ++next;
        bool split = false;
        if (last - first >= 2 && s[last - 1] == U'.') {  // "^(\S+)\.$"
            const std::u32string_view prefix(s.data() + first, last - 1 - first);
            const bool has_next = next < n;
            const auto listed = [&prefix](const std::unordered_set<std::u32string>& set) {
                return !set.empty() && set.count(std::u32string(prefix)) != 0;
            };
            const bool numeric_only = listed(numeric_only_);
            const bool keep =
                (prefix.find(U'.') != std::u32string_view::npos &&
                 std::any_of(prefix.begin(), prefix.end(), [this](char32_t c) { return is(c, kAlpha); })) ||
                (!numeric_only && listed(prefixes_)) || (has_next && is(s[next], kLower)) ||
                (numeric_only && has_next && s[next] >= U'0' && s[next] <= U'9');
            split = !keep;  // prefix + " ."
        }
        if (!out.chars.empty()) insert_space(first);
        for (size_t i = first; i < last - 1; ++i) copy(i);
        if (split) insert_space(last - 1);
        copy(last - 1);
        first = next;
    }
    return out;
}

// MosesTokenizer.tokenize(text, escape=False), no protected patterns, no aggressive dashes.
SpannedText MosesPipeline::tokenize_text(SpannedText text) const {
    const auto strip = [this](SpannedText t) {
        size_t first = 0, last = t.chars.size();
        while (first < last && space(t.chars[first])) ++first;
        while (last > first && space(t.chars[last - 1])) --last;
        return first == 0 && last == t.chars.size() ? t : slice(t, first, last);
    };
    const auto squeeze_whitespace = [this](SpannedText t) {  // "\s+" -> " "
        return rewrite(std::move(t), 0, 0, [this](const SpannedText& in, size_t i, Writer& out) -> size_t {
            if (!space(in.chars[i])) return 0;
            size_t j = i + 1;
            while (j < in.chars.size() && space(in.chars[j])) ++j;
            if (j == i + 1 && in.chars[i] == U' ') return 0;
            out.put(U' ', out.run(i, j - i));
            return j - i;
        });
    };
    text = squeeze_whitespace(std::move(text));
    // "[\000-\037]" -> ""
    const auto control = [](char32_t c) { return c < 0x20; };  // none left by the normaliser's pipeline
    if (std::any_of(text.chars.begin(), text.chars.end(), control))
        text = rewrite(std::move(text), 0, 0, [&](const SpannedText& in, size_t i, Writer&) -> size_t {
            return control(in.chars[i]) ? 1 : 0;
        });
    text = strip(std::move(text));
    // "([^{IsAlnum}\s\.'\`\,\-])" -> " \1 "
    text = rewrite(std::move(text), 0, 0, [this](const SpannedText& in, size_t i, Writer& out) -> size_t {
        const char32_t c = in.chars[i];
        if (is(c, kAlnum | kSpace) || std::u32string_view(U".'`,-").find(c) != std::u32string_view::npos)
            return 0;
        out.insert(U' ', i);
        out.copy(i);
        out.insert(U' ', i + 1);
        return 1;
    });
    // replace_multidots: "\.{2,}" -> " " + "DOT" * k + "MULTI" (+ " " unless at the end);
    // each "DOT" carries its dot's span, "MULTI" the last dot's.
    text = rewrite(std::move(text), U'.', 0, [](const SpannedText& in, size_t i, Writer& out) -> size_t {
        size_t j = i;
        while (j < in.chars.size() && in.chars[j] == U'.') ++j;
        if (j - i < 2) return 0;
        out.insert(U' ', i);
        for (size_t k = i; k < j; ++k)
            for (char32_t c : std::u32string_view(U"DOT")) out.put(c, in.spans[k]);
        for (char32_t c : std::u32string_view(U"MULTI")) out.put(c, in.spans[j - 1]);
        if (j < in.chars.size()) out.insert(U' ', j);
        return j - i;
    });
    // "([^{IsN}])[,]" -> "\1 , "
    text = rewrite(std::move(text), U',', 1, [this](const SpannedText& in, size_t i, Writer& out) -> size_t {
        if (i + 1 >= in.chars.size() || is(in.chars[i], kNumber) || in.chars[i + 1] != U',') return 0;
        out.copy(i);
        out.insert(U' ', i + 1);
        out.copy(i + 1);
        out.insert(U' ', i + 2);
        return 2;
    });
    // "[,]([^{IsN}])" -> " , \1"
    text = rewrite(std::move(text), U',', 0, [this](const SpannedText& in, size_t i, Writer& out) -> size_t {
        if (i + 1 >= in.chars.size() || in.chars[i] != U',' || is(in.chars[i + 1], kNumber)) return 0;
        out.insert(U' ', i);
        out.copy(i);
        out.insert(U' ', i + 1);
        out.copy(i + 1);
        return 2;
    });
    // "([{IsN}])[,]$" -> "\1 , "
    if (text.chars.size() >= 2 && text.chars.back() == U',' && is(text.chars[text.chars.size() - 2], kNumber)) {
        text.chars.pop_back();
        const Span comma = text.spans.back();
        text.spans.pop_back();
        SpannedText tail;
        tail.chars = U",";
        tail.spans = {comma};
        tail.end = text.end;
        append(text, tail, U' ');
        append(text, SpannedText{{}, {}, text.end}, U' ');
    }
    // Apostrophes. `before`/`after` test the characters around "'", `spaced` is which side
    // of it gets a space: 0 both ("\1 ' \2"), 1 before only ("\1 '\2"), 2 after only ("\1' \2").
    const auto apostrophe = [](SpannedText t, auto before, auto after, int spaced) {
        return rewrite(std::move(t), U'\'', 1, [&](const SpannedText& in, size_t i, Writer& out) -> size_t {
            const std::u32string& s = in.chars;
            if (i + 2 >= s.size() || s[i + 1] != U'\'' || !before(s[i]) || !after(s[i + 2])) return 0;
            out.copy(i);
            if (spaced != 2) out.insert(U' ', i + 1);
            out.copy(i + 1);
            if (spaced != 1) out.insert(U' ', i + 2);
            out.copy(i + 2);
            return 3;
        });
    };
    const auto alpha = [this](char32_t c) { return is(c, kAlpha); };
    const auto not_alpha = [this](char32_t c) { return !is(c, kAlpha); };
    const std::string& lang = data_.lang;
    if (lang == "en") {
        text = apostrophe(std::move(text), not_alpha, not_alpha, 0);
        text = apostrophe(std::move(text), [this](char32_t c) { return !is(c, kAlpha) && !is(c, kNumber); }, alpha, 0);
        text = apostrophe(std::move(text), alpha, not_alpha, 0);
        text = apostrophe(std::move(text), alpha, alpha, 1);
        text = apostrophe(std::move(text), [this](char32_t c) { return is(c, kNumber); },
                          [](char32_t c) { return c == U's'; }, 1);
    } else if (lang == "fr" || lang == "it") {
        text = apostrophe(std::move(text), not_alpha, not_alpha, 0);
        text = apostrophe(std::move(text), not_alpha, alpha, 0);
        text = apostrophe(std::move(text), alpha, not_alpha, 0);
        text = apostrophe(std::move(text), alpha, alpha, 2);
    } else {
        text = replace_literal(std::move(text), U"'", U" ' ");
    }
    SpannedText joined = nonbreaking_prefixes(text);
    recycle(std::move(text));
    text = std::move(joined);
    // sacremoses' "\s+" -> " " and strip() here change nothing: nonbreaking_prefixes joins
    // whitespace-free tokens by single spaces.
    // "\.' ?$" -> " . ' " (no trailing space is left)
    const size_t n = text.chars.size();
    if (n >= 2 && text.chars[n - 2] == U'.' && text.chars[n - 1] == U'\'') {
        SpannedText head = slice(text, 0, n - 2), dot = slice(text, n - 2, n - 1), quote = slice(text, n - 1, n);
        append(head, dot, U' ');
        append(head, quote, U' ');
        append(head, SpannedText{{}, {}, head.end}, U' ');
        text = std::move(head);
    }
    // restore_multidots: "(?:DOT)+MULTI" -> "." * k; dot k gets the span of "DOT" k.
    return rewrite(std::move(text), U'D', 0, [](const SpannedText& in, size_t i, Writer& out) -> size_t {
        const std::u32string& s = in.chars;
        size_t j = i;
        while (s.compare(j, 3, U"DOT") == 0) j += 3;
        if (j == i) return 0;
        if (s.compare(j, 5, U"MULTI") != 0) {  // starts inside this run of "DOT"s fail alike
            out.copy(i, j - i);
            return j - i;
        }
        for (size_t k = i; k < j; k += 3) out.put(U'.', out.run(k, k + 3 == j ? 8 : 3));
        return j + 5 - i;
    });
}

std::vector<SpannedText> MosesPipeline::tokenize(SpannedText text) const {
    return split_words(tokenize_text(std::move(text)), [this](char32_t c) { return space(c); });
}

// str.lower: the table, and U+03A3 by its Final_Sigma context in the same text.
SpannedText MosesPipeline::lower(SpannedText text) const {
    const UnicodeTables& u = *tables_;
    const std::u32string& s = text.chars;
    const auto changes = [&u](char32_t c) {
        return c < 0x80 ? (c >= U'A' && c <= U'Z') : u.has(c, UnicodeTables::kLowerChanges);
    };
    size_t first = size_t(std::find_if(s.begin(), s.end(), changes) - s.begin());
    if (first == s.size()) return text;  // nothing to lower (U+03A3 is kLowerChanges too)
    // Without U+03A3 (whose context is read from the unlowered text) characters that lower
    // to one character are lowered in place, up to the first that lowers to several (U+0130).
    if (s.find(kCapitalSigma, first) == std::u32string::npos) {
        std::u32string& chars = text.chars;
        for (; first < chars.size(); ++first) {
            const char32_t c = chars[first];
            if (c < 0x80) {
                if (c >= U'A' && c <= U'Z') chars[first] = c + 32;
            } else if (const std::u32string* lowered = u.lowercase(c)) {
                if (lowered->size() != 1) break;
                chars[first] = (*lowered)[0];
            }
        }
        if (first == chars.size()) return text;
    }
    SpannedText out = take_spare();
    out.end = text.end;
    out.chars.reserve(s.size() + 8);
    out.spans.reserve(s.size() + 8);
    out.chars.assign(s, 0, first);
    out.spans.assign(text.spans.begin(), text.spans.begin() + first);
    for (size_t i = first; i < s.size(); ++i) {
        const char32_t c = s[i];
        if (c < 0x80) {
            out.chars.push_back(c >= U'A' && c <= U'Z' ? c + 32 : c);
            out.spans.push_back(text.spans[i]);
        } else if (c == kCapitalSigma) {  // cased case-ignorable* SIGMA !(case-ignorable* cased)
            size_t j = i;
            while (j > 0 && u.has(s[j - 1], UnicodeTables::kCaseIgnorable)) --j;
            bool final_sigma = j > 0 && u.has(s[j - 1], UnicodeTables::kCased);
            if (final_sigma) {
                j = i + 1;
                while (j < s.size() && u.has(s[j], UnicodeTables::kCaseIgnorable)) ++j;
                final_sigma = j == s.size() || !u.has(s[j], UnicodeTables::kCased);
            }
            out.chars.push_back(final_sigma ? kFinalSigma : kSmallSigma);
            out.spans.push_back(text.spans[i]);
        } else if (const std::u32string* lowered = u.lowercase(c)) {
            for (char32_t l : *lowered) {
                out.chars.push_back(l);
                out.spans.push_back(text.spans[i]);
            }
        } else {
            out.chars.push_back(c);
            out.spans.push_back(text.spans[i]);
        }
    }
    recycle(std::move(text));
    return out;
}

// unicodedata.normalize("NFD", text) (full decomposition, then combining marks of each
// run stably sorted by combining class), then the category-Mn characters dropped. A run
// that the sort reorders gets the span of the whole run.
SpannedText MosesPipeline::nfd_strip_mn(SpannedText text) const {
    const UnicodeTables& u = *tables_;
    const auto touched = [&u](char32_t c) {
        return c >= 0x80 && (u.has(c, UnicodeTables::kNfdOrCombining) || u.has(c, UnicodeTables::kMn));
    };
    if (std::none_of(text.chars.begin(), text.chars.end(), touched)) return text;
    SpannedText decomposed = take_spare();
    decomposed.end = text.end;
    decomposed.chars.reserve(text.chars.size() * 2);
    decomposed.spans.reserve(text.chars.size() * 2);
    for (size_t i = 0; i < text.chars.size(); ++i) {
        const std::u32string* parts = u.nfd(text.chars[i]);
        if (parts == nullptr) {
            decomposed.chars.push_back(text.chars[i]);
            decomposed.spans.push_back(text.spans[i]);
            continue;
        }
        for (char32_t c : *parts) {
            decomposed.chars.push_back(c);
            decomposed.spans.push_back(text.spans[i]);
        }
    }
    std::u32string& s = decomposed.chars;
    for (size_t i = 0; i < s.size();) {
        if (u.combining(s[i]) == 0) { ++i; continue; }
        size_t j = i + 1;
        while (j < s.size() && u.combining(s[j]) != 0) ++j;
        const auto by_class = [&u](char32_t a, char32_t b) { return u.combining(a) < u.combining(b); };
        if (!std::is_sorted(s.begin() + i, s.begin() + j, by_class)) {
            std::stable_sort(s.begin() + i, s.begin() + j, by_class);
            Span span = decomposed.spans[i];
            for (size_t k = i; k < j; ++k) span.end = std::max(span.end, decomposed.spans[k].end);
            std::fill(decomposed.spans.begin() + i, decomposed.spans.begin() + j, span);
        }
        i = j;
    }
    SpannedText out;
    out.end = decomposed.end;
    out.chars.reserve(s.size());
    out.spans.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (u.has(s[i], UnicodeTables::kMn)) continue;
        out.chars.push_back(s[i]);
        out.spans.push_back(decomposed.spans[i]);
    }
    recycle(std::move(decomposed));
    return out;
}

// lowercase_and_remove_accent on words joined by spaces: lower(), NFD, drop Mn, lower().
// Steps that would change nothing return their input (lower and nfd_strip_mn check first).
SpannedText MosesPipeline::lowercase_text(SpannedText text) const {
    return lower(nfd_strip_mn(lower(std::move(text))));
}

// lowercase_and_remove_accent: " ".join(words).lower(), NFD, drop Mn, lower(), split(" ").
std::vector<SpannedText> MosesPipeline::lowercase_and_remove_accent(const std::vector<SpannedText>& words) const {
    SpannedText text;
    for (size_t w = 0; w < words.size(); ++w) append(text, words[w], w == 0 ? 0 : U' ');
    text = lowercase_text(std::move(text));
    std::vector<SpannedText> out;
    size_t first = 0;
    for (size_t i = 0; i <= text.chars.size(); ++i) {
        if (i < text.chars.size() && text.chars[i] != U' ') continue;
        out.push_back(slice(text, first, i));
        first = i + 1;
    }
    return out;
}

std::vector<SpannedText> MosesPipeline::finish(std::vector<SpannedText> words) const {
    if (data_.lowercase_and_remove_accent) words = lowercase_and_remove_accent(words);
    words.erase(std::remove_if(words.begin(), words.end(), [](const SpannedText& w) { return w.chars.empty(); }),
                words.end());
    return words;
}

// The tokenizer's words are joined by single spaces, which is the text that
// lowercase_and_remove_accent builds from them: the words are split off once, at the end
// (on whitespace: neither str.lower nor NFD makes any, so split(" ") alike).
SpannedText MosesPipeline::pipeline_text(std::u32string_view text) const {
    SpannedText normalized = normalize(from_text(text));
    if (data_.lang == "ro") normalized = romanian(std::move(normalized));
    SpannedText tokenized = tokenize_text(std::move(normalized));
    return data_.lowercase_and_remove_accent ? lowercase_text(std::move(tokenized)) : tokenized;
}

std::vector<SpannedText> MosesPipeline::words(std::u32string_view text) const {
    return split_words(pipeline_text(text), [this](char32_t c) { return space(c); });
}

void MosesPipeline::operator()(std::u32string_view text, PreTokenized& out) const {
    recycle(std::move(out.text));
    out.text = pipeline_text(text);
    out.words.clear();
    const std::u32string& s = out.text.chars;
    for (size_t i = 0; i < s.size();) {
        if (space(s[i])) { ++i; continue; }
        size_t j = i;
        while (j < s.size() && !space(s[j])) ++j;
        out.words.push_back({i, j});
        i = j;
    }
}

}  // namespace xlm_moses

// ---------------------------------------------------------------------------------------
// Binding. Python objects are read and built only with the GIL held; the work runs on
// owned copies with the GIL released.

namespace py = pybind11;

namespace {

using xlm_moses::MosesPipeline;
using xlm_moses::PreTokenized;
using xlm_moses::SpannedText;

struct Unused {};  // the batch binding's threads keep no state of their own
using xlm_moses::Span;

constexpr int64_t kMaxThreads = 1024;

const char* type_name(PyObject* object) { return Py_TYPE(object)->tp_name; }

// Code points of a str (lone surrogates included, as Python holds them).
std::u32string to_u32(PyObject* text, const char* argument) {
    if (!PyUnicode_Check(text))
        throw py::type_error(std::string(argument) + " must be a str, got " + type_name(text));
    const Py_ssize_t size = PyUnicode_GetLength(text);
    if (size < 0) throw py::error_already_set();
    std::u32string out(static_cast<size_t>(size), U'\0');
    if (size > 0 && PyUnicode_AsUCS4(text, reinterpret_cast<Py_UCS4*>(out.data()), size, 0) == nullptr)
        throw py::error_already_set();
    return out;
}

py::str to_str(const std::u32string& chars) {
    PyObject* object = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, chars.data(), Py_ssize_t(chars.size()));
    if (object == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(object);
}

// [(start, end), ...]; built with the C API directly (a text has one tuple per character,
// pybind11's make_tuple costs several times more per tuple).
py::list to_spans(const std::vector<Span>& spans) {
    py::list out(spans.size());
    for (size_t i = 0; i < spans.size(); ++i) {
        PyObject* pair = PyTuple_New(2);
        if (pair == nullptr) throw py::error_already_set();
        PyList_SET_ITEM(out.ptr(), Py_ssize_t(i), pair);  // owned by the list from here on
        for (Py_ssize_t k = 0; k < 2; ++k) {
            PyObject* number = PyLong_FromLongLong(k == 0 ? spans[i].start : spans[i].end);
            if (number == nullptr) throw py::error_already_set();
            PyTuple_SET_ITEM(pair, k, number);
        }
    }
    return out;
}

// (words: list[str], spans: list[list[tuple[int, int]]]), one span per code point of a word.
py::tuple to_python(const std::vector<SpannedText>& words) {
    py::list strings(words.size()), spans(words.size());
    for (size_t w = 0; w < words.size(); ++w) {
        strings[w] = to_str(words[w].chars);
        spans[w] = to_spans(words[w].spans);
    }
    return py::make_tuple(strings, spans);
}

// A str plus its spans: given (list of (start, end), one per code point) or [i, i + 1).
SpannedText spanned(const py::handle& text, const py::handle& spans, const char* argument) {
    SpannedText out = MosesPipeline::from_text(to_u32(text.ptr(), argument));
    if (spans.is_none()) return out;
    const auto given = spans.cast<std::vector<std::pair<int64_t, int64_t>>>();
    if (given.size() != out.chars.size())
        throw py::value_error(std::string("spans must hold one (start, end) per code point of ") + argument);
    int64_t end = 0;
    for (size_t i = 0; i < given.size(); ++i) {
        if (given[i].first < 0 || given[i].second < given[i].first)
            throw py::value_error("spans must be (start, end) pairs with 0 <= start <= end");
        out.spans[i] = Span{given[i].first, given[i].second};
        end = std::max(end, given[i].second);
    }
    out.end = end;
    return out;
}

std::shared_ptr<const xlm_moses::UnicodeTables> make_tables(const py::bytes& properties, const py::dict& lowercase,
                                                             const py::dict& nfd, const py::dict& combining) {
    xlm_moses::UnicodeData data;
    const std::string bytes = properties;
    data.properties.assign(bytes.begin(), bytes.end());
    for (const auto& [key, value] : lowercase)
        data.lowercase.emplace_back(key.cast<char32_t>(), value.cast<std::u32string>());
    for (const auto& [key, value] : nfd) data.nfd.emplace_back(key.cast<char32_t>(), value.cast<std::u32string>());
    for (const auto& [key, value] : combining) data.combining.emplace_back(key.cast<char32_t>(), value.cast<uint8_t>());
    return std::make_shared<const xlm_moses::UnicodeTables>(data);
}

}  // namespace

void register_moses(py::module_& m) {
    py::class_<xlm_moses::UnicodeTables, std::shared_ptr<xlm_moses::UnicodeTables>>(
        m, "MosesUnicodeTables", "Unicode data of Python's unicodedata / str methods for MosesPipeline (moses.h).")
        .def(py::init([](const py::bytes& properties, const py::dict& lowercase, const py::dict& nfd,
                         const py::dict& combining) {
                 return std::const_pointer_cast<xlm_moses::UnicodeTables>(
                     make_tables(properties, lowercase, nfd, combining));
             }),
             py::arg("properties"), py::arg("lowercase"), py::arg("nfd"), py::arg("combining"));

    py::class_<MosesPipeline>(m, "MosesPipeline",
                              "XLM's pre-BPE pipeline for one Moses language with source offsets (moses.h); "
                              "built by xlm_fast.moses from sacremoses' data.")
        .def(py::init([](std::shared_ptr<xlm_moses::UnicodeTables> tables, const std::string& lang,
                         bool lowercase_and_remove_accent, const std::map<char32_t, std::u32string>& unicode_punct,
                         const std::u32string& full_stops, const std::map<char32_t, char32_t>& romanian,
                         const std::vector<std::tuple<int, std::u32string, std::u32string>>& normalizer,
                         const std::u32string& is_alnum, const std::u32string& is_alpha, const std::u32string& is_lower,
                         const std::u32string& is_n, const std::u32string& is_sc, const std::u32string& is_so,
                         const std::vector<std::u32string>& nonbreaking_prefixes,
                         const std::vector<std::u32string>& numeric_only_prefixes) {
                 xlm_moses::LanguageData data;
                 data.lang = lang;
                 data.lowercase_and_remove_accent = lowercase_and_remove_accent;
                 data.unicode_punct.assign(unicode_punct.begin(), unicode_punct.end());
                 data.full_stops = full_stops;
                 data.romanian.assign(romanian.begin(), romanian.end());
                 for (const auto& [kind, from, to] : normalizer)
                     data.normalizer.push_back({static_cast<xlm_moses::NormalizerRule::Kind>(kind), from, to});
                 data.is_alnum = is_alnum;
                 data.is_alpha = is_alpha;
                 data.is_lower = is_lower;
                 data.is_n = is_n;
                 data.is_sc = is_sc;
                 data.is_so = is_so;
                 data.nonbreaking_prefixes = nonbreaking_prefixes;
                 data.numeric_only_prefixes = numeric_only_prefixes;
                 return MosesPipeline(std::move(tables), std::move(data));
             }),
             py::arg("tables"), py::arg("lang"), py::arg("lowercase_and_remove_accent"), py::arg("unicode_punct"),
             py::arg("full_stops"), py::arg("romanian"), py::arg("normalizer"), py::arg("is_alnum"),
             py::arg("is_alpha"), py::arg("is_lower"), py::arg("is_n"), py::arg("is_sc"), py::arg("is_so"),
             py::arg("nonbreaking_prefixes"), py::arg("numeric_only_prefixes"))
        .def(
            "__call__",
            [](const MosesPipeline& self, const py::object& text) {
                const std::u32string owned = to_u32(text.ptr(), "text");
                std::vector<SpannedText> words;
                {
                    py::gil_scoped_release release;  // reads only `owned`
                    words = self.words(owned);
                }
                return to_python(words);
            },
            py::arg("text"), "(words, spans) of one text: spans[w][k] is the (start, end) of code point k of word w.")
        .def(
            "batch",
            [](const MosesPipeline& self, const py::object& texts, const py::object& num_threads) {
                if (!PyList_Check(texts.ptr()))
                    throw py::type_error(std::string("texts must be a list of str, got ") + type_name(texts.ptr()));
                if (!PyLong_Check(num_threads.ptr()) || PyBool_Check(num_threads.ptr()))
                    throw py::type_error(std::string("num_threads must be an int, got ") +
                                         type_name(num_threads.ptr()));
                const int64_t threads_wanted = num_threads.cast<int64_t>();
                if (threads_wanted < 1 || threads_wanted > kMaxThreads)
                    throw py::value_error("num_threads must be in [1, " + std::to_string(kMaxThreads) + "]");
                const size_t count = size_t(PyList_GET_SIZE(texts.ptr()));
                std::vector<std::u32string> owned(count);
                for (size_t i = 0; i < count; ++i) {
                    PyObject* item = PyList_GET_ITEM(texts.ptr(), Py_ssize_t(i));
                    if (!PyUnicode_Check(item))
                        throw py::type_error("texts[" + std::to_string(i) + "] must be a str, got " + type_name(item));
                    owned[i] = to_u32(item, "texts item");
                }
                std::vector<std::vector<SpannedText>> results(count);
                {
                    py::gil_scoped_release release;  // reads only `owned`, writes only `results`
                    const size_t threads = std::min<size_t>(size_t(threads_wanted), std::max<size_t>(1, count));
                    xlm_fast::parallel_for<Unused>(count, threads, [&](size_t i, Unused&) {
                        results[i] = self.words(owned[i]);
                    });
                }
                py::list out(count);
                for (size_t i = 0; i < count; ++i) out[i] = to_python(results[i]);
                return out;
            },
            py::arg("texts"), py::arg("num_threads") = 1,
            "[(words, spans) of each text], computed on num_threads threads without the GIL.")
        .def(
            "time_passes",
            [](const MosesPipeline& self, const py::list& texts, int passes) {
                if (passes < 1) throw py::value_error("passes must be >= 1");
                std::vector<std::u32string> owned;
                for (const py::handle& text : texts) owned.push_back(to_u32(text.ptr(), "texts item"));
                std::vector<double> seconds;
                size_t words = 0;
                {
                    py::gil_scoped_release release;  // reads only `owned`
                    PreTokenized out;
                    for (int pass = 0; pass < passes; ++pass) {
                        words = 0;
                        const auto start = std::chrono::steady_clock::now();
                        for (const std::u32string& text : owned) {
                            self(text, out);
                            words += out.words.size();
                        }
                        const auto stop = std::chrono::steady_clock::now();
                        seconds.push_back(std::chrono::duration<double>(stop - start).count());
                    }
                }
                return py::make_tuple(seconds, words);
            },
            py::arg("texts"), py::arg("passes"),
            "(seconds of each pass, words of a pass): `passes` passes of the C++ pipeline (operator(), no Python "
            "objects) over texts on this thread (bench/bench_moses.py).")
        .def(
            "normalize",
            [](const MosesPipeline& self, const py::object& text, const py::object& spans) {
                SpannedText owned = spanned(text, spans, "text");
                {
                    py::gil_scoped_release release;
                    owned = self.normalize(std::move(owned));
                }
                return py::make_tuple(to_str(owned.chars), to_spans(owned.spans));
            },
            py::arg("text"), py::arg("spans") = py::none(),
            "XLMPreTokenizer.moses_pipeline with spans: (text, spans); spans default to [(i, i + 1)].")
        .def(
            "finish",
            [](const MosesPipeline& self, const py::list& words, const py::list& spans) {
                if (words.size() != spans.size()) throw py::value_error("words and spans must have the same length");
                std::vector<SpannedText> owned;
                for (size_t w = 0; w < words.size(); ++w) owned.push_back(spanned(words[w], spans[w], "words item"));
                {
                    py::gil_scoped_release release;
                    owned = self.finish(std::move(owned));
                }
                return to_python(owned);
            },
            py::arg("words"), py::arg("spans"),
            "lowercase_and_remove_accent (if enabled) and empty words dropped: (words, spans).")
        .def(
            "step",
            [](const MosesPipeline& self, const std::string& name, const py::object& text) -> py::object {
                SpannedText owned = spanned(text, py::none(), "text");
                const auto one = [](const SpannedText& t) { return py::make_tuple(to_str(t.chars), to_spans(t.spans)); };
                if (name == "replace_unicode_punct") return one(self.replace_unicode_punct(std::move(owned)));
                if (name == "normalize_punct") return one(self.normalize_punct(std::move(owned)));
                if (name == "remove_non_printing_char") return one(self.remove_non_printing_char(std::move(owned)));
                if (name == "romanian") return one(self.romanian(std::move(owned)));
                if (name == "tokenize") return to_python(self.tokenize(std::move(owned)));
                if (name == "lowercase_and_remove_accent") {  // of text.split(" ")
                    std::vector<SpannedText> words;
                    size_t first = 0;
                    for (size_t i = 0; i <= owned.chars.size(); ++i) {
                        if (i < owned.chars.size() && owned.chars[i] != U' ') continue;
                        SpannedText word;
                        word.chars = owned.chars.substr(first, i - first);
                        word.spans.assign(owned.spans.begin() + first, owned.spans.begin() + i);
                        word.end = int64_t(i);
                        words.push_back(std::move(word));
                        first = i + 1;
                    }
                    return to_python(self.lowercase_and_remove_accent(words));
                }
                throw py::value_error("name must be a pipeline step, got " + name);
            },
            py::arg("name"), py::arg("text"), "One step alone on text (tests): (text, spans) or (words, spans).");
}

// XLM's pre-BPE pipeline for the Moses languages, with source offsets: text -> the words
// that go into BPE, each code point of each word carrying the [start, end) span (Python str
// indices, i.e. code points) of the caller's original text it came from.
//
// Steps (reference: xlm_fast/pre_tokenizer.py's XLMPreTokenizer, sacremoses 0.2.0):
//   replace_unicode_punct -> MosesPunctNormalizer(lang).normalize (penn, quote commas,
//   numbers; no pre/post options) + strip -> remove_non_printing_char (category C) ->
//   Romanian table (lang == "ro") -> MosesTokenizer(lang).tokenize(escape=False) ->
//   lowercase_and_remove_accent (optional) -> drop empty words.
// Each step is one linear pass over code points + spans (no regex engine): a character
// written for a replaced run gets the span of the whole run, an inserted space an empty span
// at its place, a deleted character disappears; characters that a rule moves past others get
// the span of the whole match, so spans stay non-decreasing (start and end) over the output.
//
// Speed (~45 normaliser rules and ~20 tokenizer passes per text, most of which change
// nothing): a pass that changes nothing returns its input without a copy; a pass tries only
// the positions where its trigger character sits; a normaliser rule whose characters are not
// all in the text (a per-text character filter) is skipped; the tokenizer's words stay one
// space-joined text through lowercasing and are split once; buffers are reused per thread;
// per-code-point properties are byte tables (hash maps only behind a "has an entry" bit).
//
// Construction: the binding (moses.cpp, xlm_fast/moses.py) fills UnicodeData once per
// process from Python's unicodedata / str methods and LanguageData per language from the
// installed sacremoses objects; nothing here is a copied table. Objects are immutable after
// construction: any number of threads may call the const methods at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "spanned_text.h"

namespace xlm_moses {

using xlm_fast::PreTokenized;
using xlm_fast::Span;
using xlm_fast::SpannedText;  // the text being rewritten

// Language-independent Unicode data, as Python (the reference) sees it.
struct UnicodeData {
    std::vector<uint8_t> properties;  // one byte per code point 0 .. 0x10FFFF, bits of UnicodeTables::Property
    std::vector<std::pair<char32_t, std::u32string>> lowercase;  // c -> c.lower() where it differs
                                                                 // (U+03A3 by context, as str.lower does)
    std::vector<std::pair<char32_t, std::u32string>> nfd;        // c -> unicodedata.normalize("NFD", c) where it differs
    std::vector<std::pair<char32_t, uint8_t>> combining;         // c -> unicodedata.combining(c) where non-zero
};

// Immutable lookup tables built from UnicodeData; shared by every pipeline of a process.
class UnicodeTables {
public:
    enum Property : uint8_t {
        kC = 1,              // unicodedata.category(c)[0] == "C" (remove_non_printing_char)
        kMn = 2,             // unicodedata.category(c) == "Mn" (accents after NFD)
        kSpace = 4,          // c.isspace(): re's \s, str.strip(), str.split()
        kDecimal = 8,        // c.isdecimal(): re's \d
        kCased = 16,         // str.lower's Final_Sigma context: cased (tested on non-ignorables only) ...
        kCaseIgnorable = 32,  // ... and case-ignorable characters
        // Set by the constructor from the maps (the caller's bits 64/128 are ignored), so that
        // the common character costs one byte lookup instead of a hash lookup per map:
        kLowerChanges = 64,    // c.lower() != c
        kNfdOrCombining = 128  // NFD(c) != c or combining(c) != 0
    };
    explicit UnicodeTables(const UnicodeData& data);
    bool has(char32_t c, Property p) const { return c < properties_.size() && (properties_[c] & p) != 0; }
    uint8_t combining(char32_t c) const { return has(c, kNfdOrCombining) ? combining_slow(c) : 0; }
    const std::u32string* lowercase(char32_t c) const {  // nullptr: c.lower() == c
        return has(c, kLowerChanges) ? find(lowercase_, c) : nullptr;
    }
    const std::u32string* nfd(char32_t c) const {  // nullptr: NFD(c) == c
        return has(c, kNfdOrCombining) ? find(nfd_, c) : nullptr;
    }

private:
    uint8_t combining_slow(char32_t c) const;
    static const std::u32string* find(const std::unordered_map<char32_t, std::u32string>& map, char32_t c);

    std::vector<uint8_t> properties_;
    std::unordered_map<char32_t, std::u32string> lowercase_, nfd_;
    std::unordered_map<char32_t, uint8_t> combining_;
};

// One substitution of MosesPunctNormalizer(lang).substitutions, in its order. The binding
// recognises each (pattern, replacement) of the installed sacremoses and rejects any it
// does not know, so a changed sacremoses fails at construction instead of diverging.
struct NormalizerRule {
    enum Kind : int {
        kLiteral = 0,            // from -> to (plain text both sides)
        kSpaceRun = 1,           // " +" -> " "
        kParenSpacePunct = 2,    // "\) ([.!:?;,])" -> ")\1"
        kDigitSpacePercent = 3,  // "(\d) %" -> "\1%"
        kLetterQuoteLetter = 4,  // "([a-zA-Z])<from>([a-zA-Z])" -> "\1<to>\2"
        kQuoteThenCommas = 5,    // '"([,.]+)' -> '\1"'
        kDotsQuoteSpace = 6,     // '(\.+)"(\s*[^<])' -> '"\1\2'
        kDigitNbspDigit = 7,     // "(\d)\u00A0(\d)" -> "\1<to>\2"
    };
    Kind kind;
    std::u32string from, to;
};

// Everything per language, read from the installed sacremoses and xlm_fast/pre_tokenizer.py.
struct LanguageData {
    std::string lang;
    bool lowercase_and_remove_accent = true;
    std::vector<std::pair<char32_t, std::u32string>> unicode_punct;  // replace_unicode_punct's table
    std::u32string full_stops;                                      // its "[。．]\s*" -> ". " characters
    std::vector<std::pair<char32_t, char32_t>> romanian;            // lang == "ro" table
    std::vector<NormalizerRule> normalizer;                         // MosesPunctNormalizer(lang).substitutions
    // MosesTokenizer(lang)'s class strings (IsAlnum, IsAlpha, IsLower, IsN, IsSc, IsSo).
    std::u32string is_alnum, is_alpha, is_lower, is_n, is_sc, is_so;
    std::vector<std::u32string> nonbreaking_prefixes;    // MosesTokenizer(lang).NONBREAKING_PREFIXES
    std::vector<std::u32string> numeric_only_prefixes;   // MosesTokenizer(lang).NUMERIC_ONLY_PREFIXES
};

// The pipeline of one language and one lowercase setting; thread-safe const calls.
class MosesPipeline {
public:
    MosesPipeline(std::shared_ptr<const UnicodeTables> tables, LanguageData data);

    // The whole pipeline for a Moses language (every language but zh/th/ja): the words that
    // go into BPE as runs of out.text (out's buffers are reused).
    void operator()(std::u32string_view text, PreTokenized& out) const;

    // The steps, for zh/th/ja (segmenter in Python between them) and for rule-by-rule tests.
    // Spans of the input are the caller's (e.g. of a segmented text joined with spaces).
    SpannedText normalize(SpannedText text) const;            // XLMPreTokenizer.moses_pipeline
    std::vector<SpannedText> finish(std::vector<SpannedText> words) const;  // lowercase_and_remove_accent
                                                                          // (if enabled) + drop empty words
    std::vector<SpannedText> words(std::u32string_view text) const;      // operator() before UTF-8

    // Single steps (tests).
    SpannedText replace_unicode_punct(SpannedText text) const;
    SpannedText normalize_punct(SpannedText text) const;      // MosesPunctNormalizer.normalize (with strip)
    SpannedText remove_non_printing_char(SpannedText text) const;
    SpannedText romanian(SpannedText text) const;
    std::vector<SpannedText> tokenize(SpannedText text) const;  // MosesTokenizer.tokenize
    std::vector<SpannedText> lowercase_and_remove_accent(const std::vector<SpannedText>& words) const;

    static SpannedText from_text(std::u32string_view text);   // spans [i, i + 1)

private:
    // symbol: IsSc + IsSo; unicode_punct: a key of unicode_punct_ or a full stop (replace_unicode_punct
    // looks up only those); space: UnicodeTables::kSpace, here too for one lookup per character.
    enum Class : uint8_t {
        kAlnum = 1, kAlpha = 2, kLower = 4, kNumber = 8, kSymbol = 16, kUnicodePunct = 32, kSpace = 64
    };
    bool is(char32_t c, uint8_t classes) const {  // c has one of the Class bits of `classes`
        return c < classes_.size() && (classes_[c] & classes) != 0;
    }
    // Printable ASCII (most characters) is never whitespace: answered without the table.
    bool space(char32_t c) const { return (c <= U' ' || c >= 0x7F) && is(c, kSpace); }
    // The whole-text forms of the steps: the words of a step joined by single spaces (what
    // the reference joins and splits between them), so that words are split off only once.
    SpannedText pipeline_text(std::u32string_view text) const;  // words() joined
    SpannedText tokenize_text(SpannedText text) const;          // tokenize() joined (maybe a trailing space)
    SpannedText lowercase_text(SpannedText text) const;         // lowercase_and_remove_accent of joined words
    SpannedText lower(SpannedText text) const;                  // str.lower
    SpannedText nfd_strip_mn(SpannedText text) const;           // NFD, then drop category Mn
    SpannedText nonbreaking_prefixes(const SpannedText& text) const;

    std::shared_ptr<const UnicodeTables> tables_;
    LanguageData data_;
    std::vector<uint8_t> classes_;  // per code point, Class bits from the tokenizer's class strings
    std::unordered_map<char32_t, std::u32string> unicode_punct_;
    std::unordered_map<char32_t, char32_t> romanian_;
    std::unordered_set<std::u32string> prefixes_, numeric_only_;
};

}  // namespace xlm_moses

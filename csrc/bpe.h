// XLM byte-pair encoder (see tokenization_xlm.cpp for the semantics it shares with
// transformers' XLMTokenizer.bpe and xlm_fast/bpe.py): vocab + merges loaded once, words ->
// token ids (and each token's byte span in word + "</w>"), threaded over a batch.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "utf8.h"
#include "word_cache.h"

namespace xlm_fast {

// Open-addressing map uint64 -> (int32, int32), fixed at load time, load factor <= 0.5: the
// BPE loop's hot lookups ((left, right) -> (rank, merged); character -> symbol id), several
// times faster than std::unordered_map.
class FlatTable {
public:
    void build(const std::unordered_map<uint64_t, std::pair<int32_t, int32_t>>& pairs) {
        size_t capacity = 16;
        while (capacity < 2 * pairs.size()) capacity *= 2;
        mask_ = capacity - 1;
        shift_ = 64;
        for (size_t c = capacity; c > 1; c >>= 1) --shift_;
        slots_.assign(capacity, Slot{kEmpty, -1, -1});
        for (const auto& item : pairs) {
            size_t index = hash(item.first) & mask_;
            while (slots_[index].key != kEmpty) index = (index + 1) & mask_;
            slots_[index] = Slot{item.first, item.second.first, item.second.second};
        }
    }
    // (rank, merged) or nullptr.
    const std::pair<int32_t, int32_t>* find(uint64_t key, std::pair<int32_t, int32_t>& out) const {
        for (size_t index = hash(key) & mask_;; index = (index + 1) & mask_) {
            const Slot& slot = slots_[index];
            if (slot.key == key) {
                out = {slot.rank, slot.merged};
                return &out;
            }
            if (slot.key == kEmpty) return nullptr;
        }
    }

private:
    static constexpr uint64_t kEmpty = ~uint64_t{0};  // no valid pair of non-negative ids
    struct Slot {
        uint64_t key;
        int32_t rank, merged;
    };
    // Both halves of a pair key must reach the slot bits: fold the high word into the low one
    // before the multiplicative step, and take the product's top bits (the best-mixed ones).
    size_t hash(uint64_t key) const {
        key ^= key >> 32;
        return static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_);
    }
    std::vector<Slot> slots_{Slot{kEmpty, -1, -1}};
    size_t mask_ = 0;
    unsigned shift_ = 63;  // 64 - log2(capacity)
};

// Key of a one-character symbol: the code point, and whether it carries "</w>".
inline uint64_t char_key(uint32_t code, bool final) { return (static_cast<uint64_t>(code) << 1) | final; }

// Longest word (UTF-8 bytes) BPE takes: spans in word + "</w>" are 32-bit.
constexpr size_t kMaxWordBytes = std::numeric_limits<uint32_t>::max() - kEndOfWord.size();

class BPEModel {
public:
    // Arguments already checked and copied by the binding (vocab ids and unk_id >= 0, merge
    // symbols non-empty); words and symbols are UTF-8, lone surrogates as 3-byte sequences.
    BPEModel(const std::vector<std::pair<std::string, int32_t>>& vocab,
             const std::vector<std::pair<std::string, std::string>>& merges, int32_t unk_id,
             size_t cache_capacity)
        : unk_id_(unk_id), cache_(cache_capacity) {
        for (const auto& item : vocab) symbol_ids_[intern(item.first)] = item.second;
        int32_t rank = 0;
        for (const auto& merge : merges) {
            const int32_t left = intern(merge.first);
            const int32_t right = intern(merge.second);
            const int32_t merged = intern(merge.first + merge.second);
            ranks_[pair_key(left, right)] = {rank++, merged};  // a repeated merge keeps its last rank
        }
        pair_table_.build(ranks_);
        std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> chars;
        for (const auto& item : symbols_) {
            std::string_view text = item.first;
            const bool final = text.size() > kEndOfWord.size() &&
                               text.substr(text.size() - kEndOfWord.size()) == kEndOfWord;
            if (final) text.remove_suffix(kEndOfWord.size());
            if (text.empty()) continue;
            const size_t length = utf8_length(static_cast<unsigned char>(text[0]));
            if (length == text.size())
                chars[char_key(code_point(text.data(), length), final)] = {item.second, 0};
        }
        char_table_.build(chars);
        for (int final = 0; final < 2; ++final)
            for (uint32_t byte = 0; byte < 128; ++byte) {
                std::pair<int32_t, int32_t> found;
                ascii_ids_[final][byte] = char_table_.find(char_key(byte, final), found) ? found.first : -1;
            }
    }

    // Tokens of one word, as strings (for tokenize()).
    std::vector<std::string> bpe(const std::string& word) {
        Scratch scratch;
        WordEncoding& enc = scratch.encoding;
        encode_word(word, scratch);
        const std::string full = word + std::string(kEndOfWord);
        std::vector<std::string> tokens;
        tokens.reserve(enc.spans.size());
        for (const auto& span : enc.spans) tokens.emplace_back(full.substr(span.first, span.second - span.first));
        return tokens;
    }

    // Ids of one sequence of words, concatenated.
    std::vector<int32_t> encode(const std::vector<std::string_view>& words) {
        Scratch scratch;
        return encode(words, scratch);
    }

    // Ids of a whole batch, flat: sequence i has words[starts[i] .. starts[i + 1]) and gets ids
    // buffers[where[i].buffer][where[i].begin .. where[i].end). One buffer per worker instead
    // of one vector per sequence: two heap allocations per sequence were ~5% of a cached pass.
    struct BatchIds {
        struct Location {
            uint32_t buffer;
            size_t begin, end;
        };
        std::vector<std::vector<int32_t>> buffers;
        std::vector<Location> where;
    };

    // Sequences are handed to `num_threads` workers through an atomic counter (lengths vary a
    // lot across texts). Words are views into C++-owned memory (OwnedWords), never into
    // Python objects: this runs without the GIL.
    BatchIds encode_batch(const std::vector<std::string_view>& words, const std::vector<size_t>& starts,
                          int num_threads) {
        const size_t count = starts.size() - 1;
        // Below ~256 words per thread the thread start costs more than it saves.
        const size_t useful = std::max<size_t>(1, words.size() / 256);
        const size_t threads =
            std::max<size_t>(1, std::min<size_t>(std::max(1, num_threads), std::min(useful, count)));
        BatchIds out;
        out.buffers.resize(threads);
        out.where.resize(count);
        std::atomic<size_t> next{0};
        std::exception_ptr error;
        std::mutex error_mutex;
        auto worker = [&](uint32_t index) {
            try {
                Scratch scratch;
                std::vector<int32_t>& ids = out.buffers[index];
                ids.reserve((words.size() + words.size() / 2) / threads);
                for (size_t i = next++; i < count; i = next++) {
                    const size_t begin = ids.size();
                    for (size_t j = starts[i]; j < starts[i + 1]; ++j) encode_word(words[j], scratch, ids);
                    out.where[i] = {index, begin, ids.size()};
                }
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
            }
        };
        if (threads <= 1) {
            worker(0);
        } else {
            std::vector<std::thread> pool;
            pool.reserve(threads - 1);
            for (size_t t = 1; t < threads; ++t) {
                try {
                    pool.emplace_back(worker, static_cast<uint32_t>(t));
                } catch (const std::system_error&) {
                    break;  // the OS refused another thread: the started ones share its sequences
                }
            }
            worker(0);
            for (auto& thread : pool) thread.join();
        }
        if (error) std::rethrow_exception(error);
        return out;
    }

    WordCache& cache() { return cache_; }
    int32_t unk_id() const { return unk_id_; }
    size_t num_merges() const { return ranks_.size(); }

private:
    static constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();
    struct Symbol {
        int32_t id;     // interned symbol id, -1 for a character seen in neither vocab nor merges
        uint32_t end;   // end of its byte span in word + "</w>" (start = previous symbol's end)
        int32_t rank;   // rank of the merge (this, next symbol), kNoRank if none
        int32_t result; // symbol id that merge produces, -1 if none
    };

    // Sets first.rank/result for the pair (first, second).
    void rank_pair(Symbol& first, const Symbol& second) const {
        std::pair<int32_t, int32_t> found;
        if ((first.id | second.id) >= 0 && pair_table_.find(pair_key(first.id, second.id), found)) {
            first.rank = found.first;
            first.result = found.second;
        } else {
            first.rank = kNoRank;
            first.result = -1;
        }
    }

    static uint64_t pair_key(int32_t left, int32_t right) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
    }

    int32_t intern(const std::string& text) {
        auto it = symbols_.find(text);
        if (it != symbols_.end()) return it->second;
        strings_.push_back(text);  // deque: views into it stay valid
        const int32_t id = static_cast<int32_t>(symbol_ids_.size());
        symbols_.emplace(std::string_view(strings_.back()), id);
        symbol_ids_.push_back(unk_id_);
        return id;
    }

    int32_t lookup(std::string_view text) const {
        auto it = symbols_.find(text);
        return it == symbols_.end() ? -1 : it->second;
    }

    int32_t vocab_id(std::string_view text) const {
        const int32_t symbol = lookup(text);
        return symbol < 0 ? unk_id_ : symbol_ids_[symbol];
    }

public:
    // Buffers reused across the words one thread encodes (no allocation per word once warm).
    struct Scratch {
        WordEncoding encoding;
        std::string full;
        std::vector<Symbol> symbols;
    };

    std::vector<int32_t> encode(const std::vector<std::string_view>& words, Scratch& scratch) {
        std::vector<int32_t> ids;
        ids.reserve(words.size() + words.size() / 2);
        for (const auto& word : words) encode_word(word, scratch, ids);
        return ids;
    }

    // Result in scratch.encoding (ids and spans).
    void encode_word(std::string_view word, Scratch& scratch) {
        if (!cache_.enabled()) {
            apply_bpe(word, scratch);
            emit(word, scratch, scratch.encoding.ids, &scratch.encoding.spans);
            return;
        }
        const uint64_t hash = hash_bytes(word);
        if (cache_.get(word, hash, scratch.encoding)) return;
        apply_bpe(word, scratch);
        emit(word, scratch, scratch.encoding.ids, &scratch.encoding.spans);
        cache_.put(word, hash, scratch.encoding);
    }

    // Appends the ids of `word` to `ids`; spans are only built when the cache keeps them.
    void encode_word(std::string_view word, Scratch& scratch, std::vector<int32_t>& ids) {
        if (cache_.enabled()) {
            const uint64_t hash = hash_bytes(word);
            if (cache_.append_ids(word, hash, ids)) return;
            apply_bpe(word, scratch);
            emit(word, scratch, scratch.encoding.ids, &scratch.encoding.spans);
            cache_.put(word, hash, scratch.encoding);
            append(ids, scratch.encoding.ids.data(), scratch.encoding.ids.size());
            return;
        }
        apply_bpe(word, scratch);
        emit(word, scratch, ids, nullptr);
    }

private:
    // scratch.symbols (the merged word) -> ids appended to `ids` (+ byte spans to `spans`).
    void emit(std::string_view word, Scratch& scratch, std::vector<int32_t>& ids,
              std::vector<std::pair<uint32_t, uint32_t>>* spans) const {
        if (spans != nullptr) {
            ids.clear();
            spans->clear();
        }
        const std::vector<Symbol>& symbols = scratch.symbols;
        if (word.empty()) return;
        if (std::memchr(word.data(), ' ', word.size()) == nullptr) {
            uint32_t start = 0;
            for (const Symbol& symbol : symbols) {
                ids.push_back(symbol.id < 0 ? unk_id_ : symbol_ids_[symbol.id]);
                if (spans != nullptr) spans->emplace_back(start, symbol.end);
                start = symbol.end;
            }
            return;
        }
        std::string& full = scratch.full;
        full.assign(word.data(), word.size());
        full.append(kEndOfWord);
        const std::string_view view(full);
        uint32_t symbol_start = 0;
        for (const Symbol& symbol : symbols) {
            // " ".join(symbols).split(" "): each symbol splits on its own spaces.
            uint32_t start = symbol_start;
            for (uint32_t pos = symbol_start; pos <= symbol.end; ++pos) {
                if (pos == symbol.end || full[pos] == ' ') {
                    ids.push_back(vocab_id(view.substr(start, pos - start)));
                    if (spans != nullptr) spans->emplace_back(start, pos);
                    start = pos + 1;
                }
            }
            symbol_start = symbol.end;
        }
    }

    // Symbol id of one character (code point `code`, carrying "</w>" if `final`), -1 if none.
    int32_t char_id(const char* text, size_t length, bool final) const {
        if (length == 1) return ascii_ids_[final][static_cast<unsigned char>(text[0]) & 0x7F];
        std::pair<int32_t, int32_t> found;
        return char_table_.find(char_key(code_point(text, length), final), found) ? found.first : -1;
    }

    // BPE of `word`; the merged symbols are left in scratch.symbols.
    void apply_bpe(std::string_view word, Scratch& scratch) const {
        std::vector<Symbol>& symbols = scratch.symbols;
        symbols.clear();
        if (word.empty()) return;
        const uint32_t full_size = static_cast<uint32_t>(word.size() + kEndOfWord.size());

        // Characters: (code point) ... (last code point + "</w>").
        for (size_t pos = 0; pos < word.size();) {
            const size_t next = std::min(word.size(), pos + utf8_length(static_cast<unsigned char>(word[pos])));
            const bool last = next == word.size();
            symbols.push_back({char_id(word.data() + pos, next - pos, last),
                               static_cast<uint32_t>(last ? full_size : next), kNoRank, -1});
            pos = next;
        }
        size_t size = symbols.size();
        Symbol* sym = symbols.data();

        // sym[i].rank/result describe the pair (sym[i], sym[i + 1]); a rank names exactly one
        // pair (a repeated merge keeps only its last rank), so equal ranks mean equal pairs.
        for (size_t i = 0; i + 1 < size; ++i) rank_pair(sym[i], sym[i + 1]);
        while (size > 1) {
            size_t best = 0;
            int32_t best_rank = sym[0].rank;
            for (size_t i = 1; i + 1 < size; ++i)
                if (sym[i].rank < best_rank) best_rank = sym[i].rank, best = i;
            if (best_rank == kNoRank) break;
            // Merge every occurrence left to right (the first is `best`), compacting in place;
            // only pairs next to a merged symbol change rank.
            const int32_t result = sym[best].result;
            size_t write = best;
            for (size_t i = best; i < size; ++write) {
                if (i + 1 < size && sym[i].rank == best_rank) {
                    sym[write] = {result, sym[i + 1].end, kNoRank, -1};
                    if (write > 0) rank_pair(sym[write - 1], sym[write]);
                    i += 2;
                    if (i < size) {
                        sym[write + 1] = sym[i];
                        rank_pair(sym[write], sym[write + 1]);
                        if (sym[i].rank == best_rank) continue;  // sym[i] starts the next occurrence
                        ++write;
                        ++i;
                    }
                } else {
                    sym[write] = sym[i];
                    i += 1;
                }
            }
            size = write;
        }
        symbols.resize(size);
    }

    int32_t unk_id_;
    std::deque<std::string> strings_;
    std::unordered_map<std::string_view, int32_t> symbols_;  // symbol text -> symbol id
    std::vector<int32_t> symbol_ids_;                         // symbol id -> vocab id (or unk)
    std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> ranks_;  // (left, right) -> (rank, merged)
    FlatTable pair_table_;                                              // same, for lookups
    FlatTable char_table_;  // char_key(code point, final) -> (symbol id of "c" or "c</w>", unused)
    int32_t ascii_ids_[2][128];  // same for ASCII characters: [final][byte]
    WordCache cache_;
};

}  // namespace xlm_fast

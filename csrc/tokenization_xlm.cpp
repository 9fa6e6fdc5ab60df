// BPE core of XLMTokenizer: byte-pair merges over words that the Python front (Moses,
// jieba, PyThaiNLP, lowercasing) has already split. One object loads vocab + merges once;
// `encode_batch` turns a whole batch of word lists into id lists with the GIL released,
// spread over std::threads. The entry point takes whole sequences (not single words) so the
// per-text front can later move behind the same call without changing the Python side.
//
// Semantics equal transformers' XLMTokenizer.bpe (and xlm_fast/bpe.py, the pure-Python
// twin): the last character carries "</w>"; repeatedly merge every left-to-right occurrence
// of the lowest-ranked adjacent pair; a merge listed twice keeps its last rank; the final
// tokens are the symbols joined by " " and split on " " again (only differs for words that
// contain a space, e.g. PyThaiNLP tokens); a token outside the vocabulary maps to unk_id.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

constexpr std::string_view kEndOfWord = "</w>";

// Result of BPE on one word: token ids plus each token's byte span in word + "</w>".
struct WordEncoding {
    std::vector<int32_t> ids;
    std::vector<std::pair<uint32_t, uint32_t>> spans;
};

// Up to 8 bytes of `data` (size <= 8) packed into a word without a byte loop: two overlapping
// loads, no read past the end. Equal packed words and equal sizes mean equal bytes.
inline uint64_t load_short(const char* data, size_t size) {
    if (size >= 4) {
        uint32_t lo, hi;
        std::memcpy(&lo, data, 4);
        std::memcpy(&hi, data + size - 4, 4);
        return lo | (static_cast<uint64_t>(hi) << 32);
    }
    if (size == 0) return 0;
    const auto* bytes = reinterpret_cast<const unsigned char*>(data);
    return (uint64_t{bytes[0]} << 16) | (uint64_t{bytes[size >> 1]} << 8) | bytes[size - 1];
}

// 64-bit hash of a word's bytes, 8 bytes per step (words are short: this beats a byte loop).
// Computed once per word and reused for the shard, the slot and the stored tag.
inline uint64_t hash_bytes(std::string_view text) {
    constexpr uint64_t kMul = 0x9E3779B97F4A7C15ULL;
    uint64_t h = (text.size() + 1) * kMul;
    const char* data = text.data();
    size_t size = text.size();
    for (; size > 8; data += 8, size -= 8) {
        uint64_t chunk;
        std::memcpy(&chunk, data, 8);
        h = (h ^ chunk) * kMul;
        h ^= h >> 29;
    }
    h = (h ^ load_short(data, size)) * kMul;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ULL;
    return h ^ (h >> 32);
}

// Byte equality, inline for the usual short word (a memcmp call costs more than the compare).
inline bool same_bytes(const char* a, const char* b, size_t size) {
    if (size <= 8) return load_short(a, size) == load_short(b, size);
    return std::memcmp(a, b, size) == 0;
}

// Appends [first, first + count) to `out`; a loop beats vector::insert's memmove for the 1-3
// ids of a typical word.
inline void append(std::vector<int32_t>& out, const int32_t* first, size_t count) {
    if (count > 8) {
        out.insert(out.end(), first, first + count);
        return;
    }
    for (size_t i = 0; i < count; ++i) out.push_back(first[i]);
}

// Test-and-test-and-set lock: a cache critical section is a few dozen ns, where a
// std::mutex's lock + unlock (two atomic RMWs) cost as much as the lookup itself. Yields
// after a short spin, as the machine may have more runnable threads than cores.
class SpinLock {
public:
    void lock() {
        for (unsigned spins = 0; locked_.exchange(true, std::memory_order_acquire);) {
            while (locked_.load(std::memory_order_relaxed))
                if (++spins > 64) std::this_thread::yield();
        }
    }
    void unlock() { locked_.store(false, std::memory_order_release); }

private:
    std::atomic<bool> locked_{false};
};

// Bounded, thread-safe word -> WordEncoding cache. Sharded so that threads rarely contend.
// Each shard is an open-addressing table over flat arenas (key bytes, ids, spans appended to
// contiguous buffers; a slot holds offsets): a stored word costs no heap allocation once the
// buffers have grown, and a lookup compares bytes in place. A full shard is emptied at once by
// bumping its generation (slots of older generations read as empty), so clearing is O(1)
// and memory stays bounded on open-ended input.
class WordCache {
public:
    explicit WordCache(size_t capacity) { set_capacity(capacity); }

    void set_capacity(size_t capacity) {
        for (auto& shard : shards_) {
            std::lock_guard<SpinLock> lock(shard.lock);
            shard.release();
        }
        // Fewer shards than kShards for a tiny capacity, so that the sum stays <= capacity.
        const size_t shards = std::min<size_t>(kShards, capacity);
        capacity_ = capacity;
        per_shard_.store(shards == 0 ? 0 : std::min<size_t>(capacity / shards, kMaxPerShard),
                         std::memory_order_relaxed);
        num_shards_.store(std::max<size_t>(1, shards), std::memory_order_relaxed);
    }
    size_t capacity() const { return capacity_; }
    bool enabled() const { return per_shard_.load(std::memory_order_relaxed) != 0; }

    // On a hit copies the word's ids and spans into `out`.
    bool get(std::string_view word, uint64_t hash, WordEncoding& out) {
        Shard& shard = shard_for(hash);
        std::lock_guard<SpinLock> lock(shard.lock);
        const Slot* slot = shard.find(word, hash);
        if (slot == nullptr) return false;
        out.ids.assign(shard.ids.begin() + slot->ids_offset, shard.ids.begin() + slot->ids_offset + slot->ids_size);
        out.spans.assign(shard.spans.begin() + slot->ids_offset,
                         shard.spans.begin() + slot->ids_offset + slot->ids_size);
        return true;
    }

    // On a hit appends the word's ids to `ids` (nothing else copied, nothing allocated).
    bool append_ids(std::string_view word, uint64_t hash, std::vector<int32_t>& ids) {
        Shard& shard = shard_for(hash);
        std::lock_guard<SpinLock> lock(shard.lock);
        const Slot* slot = shard.find(word, hash);
        if (slot == nullptr) return false;
        append(ids, shard.ids.data() + slot->ids_offset, slot->ids_size);
        return true;
    }

    void put(std::string_view word, uint64_t hash, const WordEncoding& value) {
        const size_t per_shard = per_shard_.load(std::memory_order_relaxed);
        if (per_shard == 0 || word.size() > kMaxKeyBytes) return;  // huge words: not worth keeping
        Shard& shard = shard_for(hash);
        std::lock_guard<SpinLock> lock(shard.lock);
        shard.insert(word, hash, value, per_shard);
    }

    void clear() {
        for (auto& shard : shards_) {
            std::lock_guard<SpinLock> lock(shard.lock);
            shard.empty();
        }
    }

    size_t size() {
        size_t total = 0;
        for (auto& shard : shards_) {
            std::lock_guard<SpinLock> lock(shard.lock);
            total += shard.count;
        }
        return total;
    }

private:
    static constexpr size_t kShards = 16;
    // Slots hold 32-bit offsets: the key arena (at most kMaxPerShard * kKeyBytesPerEntry bytes)
    // and the id arena (bounded by kMaxArena) stay within them.
    static constexpr size_t kMaxPerShard = size_t{1} << 26;
    static constexpr size_t kMaxKeyBytes = 1024;
    static constexpr size_t kKeyBytesPerEntry = 64;  // arena bound: per_shard * this bytes of keys
    static constexpr size_t kMaxArena = std::numeric_limits<uint32_t>::max();

    struct Slot {
        uint32_t generation;  // != shard generation: empty
        uint32_t tag;         // low 32 bits of the word's hash (also picks the slot)
        uint32_t key_offset, key_size;
        uint32_t ids_offset, ids_size;  // same offset in `ids` and `spans`
    };

    struct alignas(64) Shard {  // own cache line: shards of different threads never share one
        SpinLock lock;
        uint32_t generation = 1;
        size_t count = 0;
        std::vector<Slot> slots;  // power-of-two size (or empty), load factor <= 1/2
        std::string keys;
        std::vector<int32_t> ids;
        std::vector<std::pair<uint32_t, uint32_t>> spans;

        const Slot* find(std::string_view word, uint64_t hash) const {
            if (count == 0) return nullptr;
            const uint32_t tag = static_cast<uint32_t>(hash);
            const size_t mask = slots.size() - 1;
            for (size_t index = tag & mask;; index = (index + 1) & mask) {
                const Slot& slot = slots[index];
                if (slot.generation != generation) return nullptr;
                if (slot.tag == tag && slot.key_size == word.size() &&
                    same_bytes(keys.data() + slot.key_offset, word.data(), word.size()))
                    return &slot;
            }
        }

        void insert(std::string_view word, uint64_t hash, const WordEncoding& value, size_t per_shard) {
            if (count >= per_shard || keys.size() + word.size() > per_shard * kKeyBytesPerEntry ||
                ids.size() + value.ids.size() > kMaxArena)
                empty();
            if (find(word, hash) != nullptr) return;  // another thread stored it meanwhile
            if (2 * (count + 1) > slots.size()) grow();
            const uint32_t tag = static_cast<uint32_t>(hash);
            const size_t mask = slots.size() - 1;
            size_t index = tag & mask;
            while (slots[index].generation == generation) index = (index + 1) & mask;
            slots[index] = Slot{generation, tag, static_cast<uint32_t>(keys.size()), static_cast<uint32_t>(word.size()),
                                static_cast<uint32_t>(ids.size()), static_cast<uint32_t>(value.ids.size())};
            keys.append(word.data(), word.size());
            ids.insert(ids.end(), value.ids.begin(), value.ids.end());
            spans.insert(spans.end(), value.spans.begin(), value.spans.end());
            ++count;
        }

        // Doubles the table, moving the live slots (arenas unchanged).
        void grow() {
            std::vector<Slot> old(std::max<size_t>(64, 2 * slots.size()), Slot{0, 0, 0, 0, 0, 0});
            old.swap(slots);
            const size_t mask = slots.size() - 1;
            for (const Slot& slot : old) {
                if (slot.generation != generation) continue;
                size_t index = slot.tag & mask;
                while (slots[index].generation == generation) index = (index + 1) & mask;
                slots[index] = slot;
            }
        }

        // Forgets every entry, keeping the buffers for reuse.
        void empty() {
            count = 0;
            keys.clear();
            ids.clear();
            spans.clear();
            if (++generation == 0) {  // wrapped: old slots could read as live again
                std::fill(slots.begin(), slots.end(), Slot{0, 0, 0, 0, 0, 0});
                generation = 1;
            }
        }

        // Forgets every entry and frees the buffers (capacity change).
        void release() {
            empty();
            std::vector<Slot>().swap(slots);
            std::string().swap(keys);
            std::vector<int32_t>().swap(ids);
            std::vector<std::pair<uint32_t, uint32_t>>().swap(spans);
        }
    };

    Shard& shard_for(uint64_t hash) {
        // The high half of the hash picks the shard, the low half the slot.
        return shards_[((hash >> 32) * num_shards_.load(std::memory_order_relaxed)) >> 32];
    }

    Shard shards_[kShards];
    size_t capacity_ = 0;
    std::atomic<size_t> per_shard_{0};
    std::atomic<size_t> num_shards_{1};
};

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

// Byte length of the UTF-8 sequence starting with `lead` (Python str -> UTF-8 is valid).
inline size_t utf8_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if ((lead >> 5) == 0x6) return 2;
    if ((lead >> 4) == 0xE) return 3;
    return 4;
}

// Code point of the `length`-byte UTF-8 sequence at `text`.
inline uint32_t code_point(const char* text, size_t length) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(text);
    if (length == 1) return bytes[0];
    uint32_t value = bytes[0] & (0x7F >> length);
    for (size_t i = 1; i < length; ++i) value = (value << 6) | (bytes[i] & 0x3F);
    return value;
}

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

// ----------------------------------------------------------------------------- Python boundary
// Everything below runs with the GIL held and copies what it reads into C++ memory.

constexpr int64_t kMaxId = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxThreads = 4096;
constexpr int64_t kMaxCacheCapacity = std::numeric_limits<int64_t>::max();

const char* type_name(PyObject* object) { return Py_TYPE(object)->tp_name; }

std::string repr(PyObject* object) { return py::repr(object).cast<std::string>(); }

// The Python int `value` if it lies in [low, high]; else a TypeError / ValueError that names it
// (label() builds the name, only on an error). A float or bool is refused, not converted
// (int(2.5) or True would be a guess), and a wider int is refused, never truncated.
template <typename Label>
int64_t checked_int(PyObject* value, Label label, int64_t low, int64_t high) {
    if (!PyLong_Check(value) || PyBool_Check(value))
        throw py::type_error(label() + " must be an int, got " + type_name(value));
    int overflow = 0;
    const long long result = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (result == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow != 0 || result < low || result > high)
        throw py::value_error(label() + " must be in [" + std::to_string(low) + ", " + std::to_string(high) +
                              "], got " + repr(value));
    return result;
}

int64_t checked_int(const py::handle& value, const char* name, int64_t low, int64_t high) {
    return checked_int(value.ptr(), [name]() { return std::string(name); }, low, high);
}

// UTF-8 bytes of a str, lone surrogates included (encoded as their 3-byte sequences, as
// Python's "surrogatepass" does), so that such a code point reaches BPE like any other
// character, as in the pure-Python twin. Appended to `out`; false if `text` is not a str.
// Runs no Python code, so borrowed items of a list stay valid across calls.
bool append_utf8(PyObject* text, std::string& out) {
    if (!PyUnicode_Check(text)) return false;
    Py_ssize_t length = 0;
    const char* data = PyUnicode_AsUTF8AndSize(text, &length);
    if (data != nullptr) {
        out.append(data, static_cast<size_t>(length));
        return true;
    }
    PyErr_Clear();  // a lone surrogate: strict UTF-8 refuses it
    py::object bytes = py::reinterpret_steal<py::object>(PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass"));
    if (!bytes) throw py::error_already_set();
    out.append(PyBytes_AS_STRING(bytes.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(bytes.ptr())));
    return true;
}

// `convert(object)` (PySequence_Tuple, or fast_sequence: the list or tuple itself, else a new
// list); a TypeError that names the argument (message()) when `object` is a str or no
// iterable. Other errors, e.g. one raised by a generator, propagate as they are.
template <typename Convert, typename Message>
py::object as_sequence(PyObject* object, Convert convert, Message message) {
    if (PyUnicode_Check(object)) throw py::type_error(message() + ", got str");
    py::object items = py::reinterpret_steal<py::object>(convert(object));
    if (!items) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw py::error_already_set();
        PyErr_Clear();
        throw py::type_error(message() + ", got " + type_name(object));
    }
    return items;
}

PyObject* fast_sequence(PyObject* object) { return PySequence_Fast(object, ""); }

// vocab {str: int} -> (UTF-8 token, id) pairs. PyDict_Next's borrowed items are safe: the
// loop runs no Python code (an error message may, but nothing is read after it).
std::vector<std::pair<std::string, int32_t>> read_vocab(const py::handle& vocab) {
    if (!PyDict_Check(vocab.ptr()))
        throw py::type_error(std::string("vocab must be a dict {str: int}, got ") + type_name(vocab.ptr()));
    std::vector<std::pair<std::string, int32_t>> out(static_cast<size_t>(PyDict_Size(vocab.ptr())));
    Py_ssize_t position = 0;
    PyObject *key = nullptr, *value = nullptr;
    for (auto& [token, id] : out) {
        PyDict_Next(vocab.ptr(), &position, &key, &value);
        if (!append_utf8(key, token)) throw py::type_error(std::string("vocab keys must be str, got ") + type_name(key));
        id = static_cast<int32_t>(checked_int(value, [key]() { return "vocab[" + repr(key) + "]"; }, 0, kMaxId));
    }
    return out;
}

// merges [(str, str)] (rank = position) -> UTF-8 pairs.
std::vector<std::pair<std::string, std::string>> read_merges(const py::handle& merges) {
    const py::object items =
        as_sequence(merges.ptr(), fast_sequence, []() { return std::string("merges must be a list of (str, str) pairs"); });
    const Py_ssize_t size = PySequence_Fast_GET_SIZE(items.ptr());
    std::vector<std::pair<std::string, std::string>> out(static_cast<size_t>(size));
    for (Py_ssize_t i = 0; i < size; ++i) {
        PyObject* pair = PySequence_Fast_GET_ITEM(items.ptr(), i);
        auto& [left, right] = out[static_cast<size_t>(i)];
        const auto label = [i]() { return "merges[" + std::to_string(i) + "]"; };
        if (!(PyTuple_Check(pair) || PyList_Check(pair)) || PySequence_Fast_GET_SIZE(pair) != 2 ||
            !append_utf8(PySequence_Fast_GET_ITEM(pair, 0), left) || !append_utf8(PySequence_Fast_GET_ITEM(pair, 1), right))
            throw py::type_error(label() + " must be a pair of str, got " + repr(pair));
        if (left.empty() || right.empty()) throw py::value_error(label() + " has an empty symbol");
    }
    return out;
}

// Words of many sequences copied into one C++-owned buffer while the GIL is held: the
// encoder runs without the GIL, when another Python thread may change or free the caller's
// lists and strings, so nothing of theirs may be read then.
struct OwnedWords {
    std::string bytes;                  // every word's UTF-8, back to back
    std::vector<size_t> word_ends;      // word i is bytes[word_ends[i - 1] .. word_ends[i])
    std::vector<size_t> sequence_ends;  // sequence i has words [sequence_ends[i - 1] .. sequence_ends[i])

    // Appends the str items of `words` as one sequence; errors name "words" or "batch[index]".
    void add_sequence(PyObject* words, const char* name, Py_ssize_t index) {
        auto label = [&]() { return index < 0 ? std::string(name) : std::string(name) + "[" + std::to_string(index) + "]"; };
        const py::object fast = as_sequence(words, fast_sequence, [&]() { return label() + " must be a list of str"; });
        const Py_ssize_t size = PySequence_Fast_GET_SIZE(fast.ptr());
        for (Py_ssize_t j = 0; j < size; ++j) {
            PyObject* word = PySequence_Fast_GET_ITEM(fast.ptr(), j);
            const size_t start = bytes.size();
            if (!append_utf8(word, bytes))
                throw py::type_error(label() + "[" + std::to_string(j) + "] must be a str, got " + type_name(word));
            if (bytes.size() - start > kMaxWordBytes)
                throw py::value_error(label() + "[" + std::to_string(j) + "] is longer than " +
                                      std::to_string(kMaxWordBytes) + " UTF-8 bytes");
            word_ends.push_back(bytes.size());
        }
        sequence_ends.push_back(word_ends.size());
    }

    // Views into `bytes` (valid while this object lives and is not changed) and the start of
    // each sequence in them (starts[0] = 0, one more entry than sequences).
    std::vector<std::string_view> views() const {
        std::vector<std::string_view> out;
        out.reserve(word_ends.size());
        size_t begin = 0;
        for (size_t end : word_ends) {
            out.emplace_back(bytes.data() + begin, end - begin);
            begin = end;
        }
        return out;
    }
    std::vector<size_t> starts() const {
        std::vector<size_t> out{0};
        out.insert(out.end(), sequence_ends.begin(), sequence_ends.end());
        return out;
    }
};

// A str of UTF-8 bytes that may hold surrogates encoded by append_utf8.
py::str to_str(const std::string& text) {
    PyObject* decoded = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "surrogatepass");
    if (decoded == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(decoded);
}

// Builds many lists at once: the cyclic GC is paused meanwhile (a list of ids holds no cycle,
// and collections triggered by thousands of new lists cost ~10% of a batch).
class GcPause {
public:
#if PY_VERSION_HEX >= 0x030A0000
    GcPause() : was_enabled_(PyGC_Disable()) {}
    ~GcPause() {
        if (was_enabled_) PyGC_Enable();
    }

private:
    int was_enabled_;
#endif
};

py::list to_list(const int32_t* ids, size_t size) {
    py::list out(size);
    for (size_t i = 0; i < size; ++i) {
        PyObject* id = PyLong_FromLong(ids[i]);
        if (id == nullptr) throw py::error_already_set();
        PyList_SET_ITEM(out.ptr(), i, id);
    }
    return out;
}

}  // namespace

void register_tokenization_xlm(py::module_& m) {
    py::class_<BPEModel>(m, "BPEModel",
                         "XLM byte-pair encoder: vocab + merges loaded once, bounded thread-safe word cache.")
        .def(py::init([](const py::object& vocab, const py::object& merges, const py::object& unk_id,
                         const py::object& cache_capacity) {
                 const auto unk = static_cast<int32_t>(checked_int(unk_id, "unk_id", 0, kMaxId));
                 const auto capacity = static_cast<size_t>(
                     checked_int(cache_capacity, "cache_capacity", 0, kMaxCacheCapacity));
                 return std::make_unique<BPEModel>(read_vocab(vocab), read_merges(merges), unk, capacity);
             }),
             py::arg("vocab"), py::arg("merges"), py::arg("unk_id"), py::arg("cache_capacity") = 1 << 16)
        .def(
            "bpe",
            [](BPEModel& self, const py::object& word) {
                std::string bytes;
                if (!append_utf8(word.ptr(), bytes))
                    throw py::type_error(std::string("word must be a str, got ") + type_name(word.ptr()));
                if (bytes.size() > kMaxWordBytes)
                    throw py::value_error("word is longer than " + std::to_string(kMaxWordBytes) + " UTF-8 bytes");
                py::list tokens;
                for (const std::string& token : self.bpe(bytes)) tokens.append(to_str(token));
                return tokens;
            },
            py::arg("word"), "Tokens of one word ('</w>' on the last).")
        .def(
            "encode",
            [](BPEModel& self, const py::object& words) {
                OwnedWords owned;
                owned.add_sequence(words.ptr(), "words", -1);
                std::vector<int32_t> ids;
                {
                    py::gil_scoped_release release;  // reads only `owned`
                    ids = self.encode(owned.views());
                }
                return to_list(ids.data(), ids.size());
            },
            py::arg("words"), "Ids of one sequence of words, concatenated.")
        .def(
            "encode_batch",
            [](BPEModel& self, const py::object& batch, const py::object& num_threads) {
                const int64_t threads = checked_int(num_threads, "num_threads", 1, kMaxThreads);
                // A tuple of the sequences, so that Python code run while one is read (a
                // generator's) cannot change which objects the others are.
                const py::object items = as_sequence(batch.ptr(), PySequence_Tuple,
                                                     []() { return std::string("batch must be a list of lists of str"); });
                const Py_ssize_t count = PyTuple_GET_SIZE(items.ptr());
                OwnedWords owned;
                owned.sequence_ends.reserve(static_cast<size_t>(count));
                for (Py_ssize_t i = 0; i < count; ++i) owned.add_sequence(PyTuple_GET_ITEM(items.ptr(), i), "batch", i);
                BPEModel::BatchIds ids;
                {
                    py::gil_scoped_release release;  // reads only `owned`
                    ids = self.encode_batch(owned.views(), owned.starts(), static_cast<int>(threads));
                }
                GcPause pause;
                py::list out(ids.where.size());
                for (size_t i = 0; i < ids.where.size(); ++i) {
                    const auto& at = ids.where[i];
                    const int32_t* first = ids.buffers[at.buffer].data() + at.begin;
                    PyList_SET_ITEM(out.ptr(), i, to_list(first, at.end - at.begin).release().ptr());
                }
                return out;
            },
            py::arg("batch"), py::arg("num_threads") = 1,
            "Ids of each sequence of words in `batch`, computed on `num_threads` threads without the GIL.")
        .def("clear_cache", [](BPEModel& self) { self.cache().clear(); })
        .def_property(
            "cache_capacity", [](BPEModel& self) { return self.cache().capacity(); },
            [](BPEModel& self, const py::object& capacity) {
                self.cache().set_capacity(static_cast<size_t>(
                    checked_int(capacity, "cache_capacity", 0, kMaxCacheCapacity)));
            },
            "Most words kept in the cache; 0 disables it.")
        .def_property_readonly("cache_size", [](BPEModel& self) { return self.cache().size(); })
        .def_property_readonly("unk_id", &BPEModel::unk_id)
        .def_property_readonly("num_merges", &BPEModel::num_merges);
}

// Bounded, thread-safe cache word -> (token ids, token byte spans) shared by the threads
// that encode a batch; and the short-string hashing it keys on.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace xlm_fast {

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

}  // namespace xlm_fast

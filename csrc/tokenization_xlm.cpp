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
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
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

// Bounded, thread-safe word -> WordEncoding cache. Sharded so that threads rarely contend;
// a full shard is simply emptied (cheap, and keeps memory bounded on open-ended input).
class WordCache {
public:
    explicit WordCache(size_t capacity) { set_capacity(capacity); }

    void set_capacity(size_t capacity) {
        for (auto& shard : shards_) {
            std::lock_guard<std::mutex> lock(shard.mutex);
            shard.map.clear();
        }
        capacity_ = capacity;
        per_shard_ = capacity == 0 ? 0 : std::max<size_t>(1, capacity / kShards);
    }
    size_t capacity() const { return capacity_; }

    bool get(const std::string& word, WordEncoding& out) {
        if (per_shard_ == 0) return false;
        Shard& shard = shard_for(word);
        std::lock_guard<std::mutex> lock(shard.mutex);
        auto it = shard.map.find(word);
        if (it == shard.map.end()) return false;
        out = it->second;
        return true;
    }

    void put(const std::string& word, const WordEncoding& value) {
        if (per_shard_ == 0) return;
        Shard& shard = shard_for(word);
        std::lock_guard<std::mutex> lock(shard.mutex);
        if (shard.map.size() >= per_shard_) shard.map.clear();
        shard.map.emplace(word, value);
    }

    void clear() { set_capacity(capacity_); }

    size_t size() {
        size_t total = 0;
        for (auto& shard : shards_) {
            std::lock_guard<std::mutex> lock(shard.mutex);
            total += shard.map.size();
        }
        return total;
    }

private:
    static constexpr size_t kShards = 16;
    struct Shard {
        std::mutex mutex;
        std::unordered_map<std::string, WordEncoding> map;
    };
    Shard& shard_for(const std::string& word) {
        return shards_[std::hash<std::string>{}(word) % kShards];
    }
    Shard shards_[kShards];
    size_t capacity_ = 0;
    size_t per_shard_ = 0;
};

// Byte length of the UTF-8 sequence starting with `lead` (Python str -> UTF-8 is valid).
inline size_t utf8_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if ((lead >> 5) == 0x6) return 2;
    if ((lead >> 4) == 0xE) return 3;
    return 4;
}

class BPEModel {
public:
    BPEModel(const std::unordered_map<std::string, int64_t>& vocab,
             const std::vector<std::pair<std::string, std::string>>& merges, int64_t unk_id,
             size_t cache_capacity)
        : unk_id_(static_cast<int32_t>(unk_id)), cache_(cache_capacity) {
        for (const auto& item : vocab) {
            if (item.second < 0 || item.second > std::numeric_limits<int32_t>::max())
                throw std::invalid_argument("vocab id of '" + item.first + "' is out of range");
            intern(item.first);
        }
        for (const auto& item : vocab) symbol_ids_[intern(item.first)] = static_cast<int32_t>(item.second);
        int32_t rank = 0;
        for (const auto& merge : merges) {
            if (merge.first.empty() || merge.second.empty())
                throw std::invalid_argument("merge #" + std::to_string(rank) + " has an empty symbol");
            const int32_t left = intern(merge.first);
            const int32_t right = intern(merge.second);
            const int32_t merged = intern(merge.first + merge.second);
            ranks_[pair_key(left, right)] = {rank++, merged};  // a repeated merge keeps its last rank
        }
    }

    // Tokens of one word, as strings (for tokenize()).
    std::vector<std::string> bpe(const std::string& word) {
        WordEncoding enc;
        encode_word(word, enc);
        const std::string full = word + std::string(kEndOfWord);
        std::vector<std::string> tokens;
        tokens.reserve(enc.spans.size());
        for (const auto& span : enc.spans) tokens.emplace_back(full.substr(span.first, span.second - span.first));
        return tokens;
    }

    // Ids of one sequence of words, concatenated.
    std::vector<int32_t> encode(const std::vector<std::string>& words) {
        std::vector<int32_t> ids;
        WordEncoding enc;
        for (const auto& word : words) {
            encode_word(word, enc);
            ids.insert(ids.end(), enc.ids.begin(), enc.ids.end());
        }
        return ids;
    }

    // batch[i] is the word list of sequence i; returns its ids. Sequences are handed to
    // `num_threads` workers through an atomic counter (lengths vary a lot across texts).
    std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::vector<std::string>>& batch,
                                                   int num_threads) {
        std::vector<std::vector<int32_t>> out(batch.size());
        size_t total_words = 0;
        for (const auto& words : batch) total_words += words.size();
        // Below ~256 words per thread the thread start costs more than it saves.
        const size_t useful = std::max<size_t>(1, total_words / 256);
        const size_t threads = std::min<size_t>(std::max(1, num_threads), std::min(useful, batch.size()));
        std::atomic<size_t> next{0};
        std::exception_ptr error;
        std::mutex error_mutex;
        auto worker = [&]() {
            try {
                for (size_t i = next++; i < batch.size(); i = next++) out[i] = encode(batch[i]);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
            }
        };
        if (threads <= 1) {
            worker();
        } else {
            std::vector<std::thread> pool;
            pool.reserve(threads - 1);
            for (size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
            worker();
            for (auto& thread : pool) thread.join();
        }
        if (error) std::rethrow_exception(error);
        return out;
    }

    WordCache& cache() { return cache_; }
    int32_t unk_id() const { return unk_id_; }
    size_t num_merges() const { return ranks_.size(); }

private:
    struct Symbol {
        int32_t id;  // interned symbol id, -1 for a character seen in neither vocab nor merges
        uint32_t start, end;  // byte span in word + "</w>"
    };

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

    void encode_word(const std::string& word, WordEncoding& out) {
        if (cache_.get(word, out)) return;
        apply_bpe(word, out);
        cache_.put(word, out);
    }

    void apply_bpe(const std::string& word, WordEncoding& out) const {
        out.ids.clear();
        out.spans.clear();
        if (word.empty()) return;
        const std::string full = word + std::string(kEndOfWord);
        const std::string_view view(full);

        // Characters: (code point) ... (last code point + "</w>").
        std::vector<Symbol> symbols;
        symbols.reserve(word.size());
        for (size_t pos = 0; pos < word.size();) {
            size_t next = std::min(word.size(), pos + utf8_length(static_cast<unsigned char>(word[pos])));
            const size_t end = next == word.size() ? full.size() : next;
            symbols.push_back({lookup(view.substr(pos, end - pos)), static_cast<uint32_t>(pos),
                               static_cast<uint32_t>(end)});
            pos = next;
        }

        std::vector<Symbol> merged;
        merged.reserve(symbols.size());
        while (symbols.size() > 1) {
            int32_t best_rank = std::numeric_limits<int32_t>::max();
            int32_t left = -1, right = -1, result = -1;
            for (size_t i = 0; i + 1 < symbols.size(); ++i) {
                if (symbols[i].id < 0 || symbols[i + 1].id < 0) continue;
                auto it = ranks_.find(pair_key(symbols[i].id, symbols[i + 1].id));
                if (it != ranks_.end() && it->second.first < best_rank) {
                    best_rank = it->second.first;
                    left = symbols[i].id;
                    right = symbols[i + 1].id;
                    result = it->second.second;
                }
            }
            if (result < 0) break;
            merged.clear();
            for (size_t i = 0; i < symbols.size();) {
                if (i + 1 < symbols.size() && symbols[i].id == left && symbols[i + 1].id == right) {
                    merged.push_back({result, symbols[i].start, symbols[i + 1].end});
                    i += 2;
                } else {
                    merged.push_back(symbols[i]);
                    i += 1;
                }
            }
            symbols.swap(merged);
        }

        const bool has_space = word.find(' ') != std::string::npos;
        for (const Symbol& symbol : symbols) {
            if (!has_space) {
                out.ids.push_back(symbol.id < 0 ? unk_id_ : symbol_ids_[symbol.id]);
                out.spans.emplace_back(symbol.start, symbol.end);
                continue;
            }
            // " ".join(symbols).split(" "): each symbol splits on its own spaces.
            uint32_t start = symbol.start;
            for (uint32_t pos = symbol.start; pos <= symbol.end; ++pos) {
                if (pos == symbol.end || full[pos] == ' ') {
                    out.ids.push_back(vocab_id(view.substr(start, pos - start)));
                    out.spans.emplace_back(start, pos);
                    start = pos + 1;
                }
            }
        }
    }

    int32_t unk_id_;
    std::deque<std::string> strings_;
    std::unordered_map<std::string_view, int32_t> symbols_;  // symbol text -> symbol id
    std::vector<int32_t> symbol_ids_;                         // symbol id -> vocab id (or unk)
    std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> ranks_;  // (left, right) -> (rank, merged)
    WordCache cache_;
};

}  // namespace

void register_tokenization_xlm(py::module_& m) {
    py::class_<BPEModel>(m, "BPEModel",
                         "XLM byte-pair encoder: vocab + merges loaded once, bounded thread-safe word cache.")
        .def(py::init<const std::unordered_map<std::string, int64_t>&,
                      const std::vector<std::pair<std::string, std::string>>&, int64_t, size_t>(),
             py::arg("vocab"), py::arg("merges"), py::arg("unk_id"), py::arg("cache_capacity") = 1 << 16)
        .def("bpe", &BPEModel::bpe, py::arg("word"), "Tokens of one word ('</w>' on the last).")
        .def("encode", &BPEModel::encode, py::arg("words"), py::call_guard<py::gil_scoped_release>(),
             "Ids of one sequence of words, concatenated.")
        .def("encode_batch", &BPEModel::encode_batch, py::arg("batch"), py::arg("num_threads") = 1,
             py::call_guard<py::gil_scoped_release>(),
             "Ids of each sequence of words in `batch`, computed on `num_threads` threads without the GIL.")
        .def("clear_cache", [](BPEModel& self) { self.cache().clear(); })
        .def_property(
            "cache_capacity", [](BPEModel& self) { return self.cache().capacity(); },
            [](BPEModel& self, size_t capacity) { self.cache().set_capacity(capacity); },
            "Most words kept in the cache; 0 disables it.")
        .def_property_readonly("cache_size", [](BPEModel& self) { return self.cache().size(); })
        .def_property_readonly("unk_id", &BPEModel::unk_id)
        .def_property_readonly("num_merges", &BPEModel::num_merges);
}

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
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "batch_encoder.h"
#include "bpe.h"
#include "moses.h"

namespace py = pybind11;

namespace {

using namespace xlm_fast;

// ----------------------------------------------------------------------------- Python boundary
// Everything below runs with the GIL held and copies what it reads into C++ memory.

constexpr int64_t kMaxId = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxThreads = 4096;
constexpr int64_t kMaxCacheCapacity = std::numeric_limits<int64_t>::max();
constexpr int64_t kMaxCount = std::numeric_limits<int64_t>::max() / 4;  // lengths: no overflow in sums

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

// ----------------------------------------------------------------------------- batch encoder

// Code points of a str (lone surrogates included) into `out`; false if `text` is not a str.
bool read_code_points(PyObject* text, std::u32string& out) {
    if (!PyUnicode_Check(text)) return false;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) throw py::error_already_set();
#endif
    const Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    const int kind = PyUnicode_KIND(text);
    const void* data = PyUnicode_DATA(text);
    out.resize(static_cast<size_t>(size));
    for (Py_ssize_t i = 0; i < size; ++i) out[static_cast<size_t>(i)] = PyUnicode_READ(kind, data, i);
    return true;
}

// The str items of `texts` appended to `out` as code points; errors name `name`[index].
void read_texts(const py::handle& texts, const char* name, std::vector<std::u32string>& out) {
    const py::object items = as_sequence(texts.ptr(), PySequence_Tuple,
                                         [name]() { return std::string(name) + " must be a list of str"; });
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(items.ptr()); ++i) {
        PyObject* text = PyTuple_GET_ITEM(items.ptr(), i);
        if (!read_code_points(text, out.emplace_back()))
            throw py::type_error(std::string(name) + "[" + std::to_string(i) + "] must be a str, got " +
                                 type_name(text));
    }
}

// sequences [[int | [str]]] (added token ids and runs of pre-tokenized words) -> C++ copies.
std::vector<WordSequence> read_word_sequences(const py::handle& sequences) {
    const py::object items = as_sequence(sequences.ptr(), PySequence_Tuple, []() {
        return std::string("sequences must be a list of lists of (int | list of str)");
    });
    std::vector<WordSequence> out(static_cast<size_t>(PyTuple_GET_SIZE(items.ptr())));
    for (size_t i = 0; i < out.size(); ++i) {
        const std::string label = "sequences[" + std::to_string(i) + "]";
        const py::object segments = as_sequence(PyTuple_GET_ITEM(items.ptr(), i), fast_sequence,
                                                [&]() { return label + " must be a list"; });
        WordSequence& sequence = out[i];
        for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(segments.ptr()); ++j) {
            PyObject* segment = PySequence_Fast_GET_ITEM(segments.ptr(), j);
            const auto segment_label = [&]() { return label + "[" + std::to_string(j) + "]"; };
            if (PyLong_Check(segment)) {
                sequence.segments.push_back(
                    {static_cast<int32_t>(checked_int(segment, segment_label, 0, kMaxId)), 0, 0, 0, 0});
                continue;
            }
            const py::object words =
                as_sequence(segment, fast_sequence, [&]() { return segment_label() + " must be an int or a list of str"; });
            const size_t begin = sequence.words.size();
            for (Py_ssize_t w = 0; w < PySequence_Fast_GET_SIZE(words.ptr()); ++w) {
                PyObject* word = PySequence_Fast_GET_ITEM(words.ptr(), w);
                if (!append_utf8(word, sequence.words.emplace_back()))
                    throw py::type_error(segment_label() + "[" + std::to_string(w) + "] must be a str, got " +
                                         type_name(word));
                if (sequence.words.back().size() > kMaxWordBytes)
                    throw py::value_error(segment_label() + "[" + std::to_string(w) + "] is longer than " +
                                          std::to_string(kMaxWordBytes) + " UTF-8 bytes");
            }
            sequence.segments.push_back({-1, begin, sequence.words.size(), 0, 0});
        }
    }
    return out;
}

// spans[i] (a 1-D int64 array-like): [start, end) for each added token and each code point of
// each word of sequences[i], in order -> the sequence's span fields. Checked against the words.
void read_word_spans(const py::handle& spans, std::vector<WordSequence>& sequences) {
    const py::object items = as_sequence(spans.ptr(), PySequence_Tuple, []() {
        return std::string("spans must be a list of 1-D int arrays, one per sequence");
    });
    if (static_cast<size_t>(PyTuple_GET_SIZE(items.ptr())) != sequences.size())
        throw py::value_error("spans must have one entry per sequence");
    for (size_t i = 0; i < sequences.size(); ++i) {
        const auto values = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(
            PyTuple_GET_ITEM(items.ptr(), i));
        if (!values || values.ndim() != 1) throw py::type_error("spans[" + std::to_string(i) + "] must be a 1-D int array");
        WordSequence& sequence = sequences[i];
        const int64_t* next = values.data();
        const int64_t* const last = next + values.size();
        const auto take = [&]() -> Span {
            if (last - next < 2)
                throw py::value_error("spans[" + std::to_string(i) + "] must hold 2 values per added token and per "
                                      "code point of the sequence's words");
            const Span span{next[0], next[1]};
            next += 2;
            if (span.start < 0 || span.end < span.start)
                throw py::value_error("spans[" + std::to_string(i) + "] holds an invalid span");
            return span;
        };
        for (auto& segment : sequence.segments) {
            if (segment.id >= 0) {
                const Span span = take();
                segment.start = span.start;
                segment.length = span.end - span.start;
                continue;
            }
            for (size_t w = segment.words_begin; w < segment.words_end; ++w) {
                const std::string& word = sequence.words[w];
                for (size_t pos = 0; pos < word.size(); pos += utf8_length(static_cast<unsigned char>(word[pos])))
                    sequence.spans.push_back(take());
            }
        }
        if (next != last) throw py::value_error("spans[" + std::to_string(i) + "] has values past its words");
    }
}

// The options dict of XLMTokenizer's fast path (keys as in EncodeOptions; strategies as str or None), read
// once per configuration (the EncodeOptions class below).
EncodeOptions read_options(const py::dict& options) {
    auto get = [&](const char* key) -> py::object {
        if (!options.contains(key)) throw py::key_error(std::string("options lacks ") + key);
        return py::object(options[key]);
    };
    auto flag = [&](const char* key) {
        const py::object value = get(key);
        if (!PyBool_Check(value.ptr())) throw py::type_error(std::string("options[") + key + "] must be a bool");
        return value.ptr() == Py_True;
    };
    auto text = [&](const char* key) {
        const py::object value = get(key);
        return value.is_none() ? std::string() : value.cast<std::string>();
    };
    EncodeOptions out;
    out.add_special_tokens = flag("add_special_tokens");
    out.bos_id = static_cast<int32_t>(checked_int(get("bos_id"), "bos_id", 0, kMaxId));
    out.sep_id = static_cast<int32_t>(checked_int(get("sep_id"), "sep_id", 0, kMaxId));
    out.pad_id = static_cast<int32_t>(checked_int(get("pad_id"), "pad_id", 0, kMaxId));
    const std::string truncation = text("truncation");
    if (truncation == "longest_first") out.truncation = Truncation::kLongestFirst;
    else if (truncation == "only_first") out.truncation = Truncation::kOnlyFirst;
    else if (truncation == "only_second") out.truncation = Truncation::kOnlySecond;
    else if (!truncation.empty()) throw py::value_error("truncation: unknown strategy " + truncation);
    const py::object max_length = get("max_length");
    out.max_length = max_length.is_none() ? -1 : checked_int(max_length, "max_length", 0, kMaxCount);
    out.stride = checked_int(get("stride"), "stride", 0, kMaxCount);
    out.truncate_left = text("truncation_side") == "left";
    out.overflow = flag("overflow");
    const std::string padding = text("padding");
    if (padding == "longest") out.padding = Padding::kLongest;
    else if (padding == "max_length") out.padding = Padding::kMaxLength;
    else if (!padding.empty()) throw py::value_error("padding: unknown strategy " + padding);
    if (out.padding == Padding::kMaxLength && out.max_length < 0)
        throw py::value_error("padding='max_length' needs max_length");
    const py::object multiple = get("pad_to_multiple_of");
    out.pad_to_multiple_of = multiple.is_none() ? 0 : checked_int(multiple, "pad_to_multiple_of", 1, kMaxCount);
    out.pad_left = text("padding_side") == "left";
    out.token_type_ids = flag("token_type_ids");
    out.special_tokens_mask = flag("special_tokens_mask");
    out.attention_mask = flag("attention_mask");
    out.offsets = flag("offsets");
    out.num_threads = static_cast<int>(checked_int(get("num_threads"), "num_threads", 1, kMaxThreads));
    return out;
}

// New references to Python ints, shared for the values seen most: a batch repeats the same
// ids (frequent words, pad) thousands of times, and an int outside CPython's small-int cache
// costs an allocation each. Direct-mapped by value, kept across calls (ints are immutable);
// used with the GIL held only, which guards it.
class IntCache {
public:
    PyObject* get(int64_t value) {
        Slot& slot = slots_[static_cast<uint64_t>(value) % kSlots];
        if (slot.object == nullptr || slot.value != value) {
            PyObject* object = PyLong_FromLongLong(value);
            if (object == nullptr) throw py::error_already_set();
            Py_XDECREF(slot.object);
            slot = {value, object};
        }
        Py_INCREF(slot.object);
        return slot.object;
    }

private:
    static constexpr size_t kSlots = 4096;
    struct Slot {
        int64_t value;
        PyObject* object;
    };
    Slot slots_[kSlots] = {};
};

// encode_texts / encode_words' result: every row in C++ buffers, of which Python converts only
// what it reads (most calls read input_ids and attention_mask; the word and offset maps are
// read on demand, if ever). Immutable once built.
class EncodedRows {
public:
    explicit EncodedRows(BatchOutput&& output) : output_(std::move(output)) {
        const auto& starts = output_.row_starts;
        for (size_t r = 0; r + 1 < starts.size(); ++r) {
            const int64_t size = starts[r + 1] - starts[r];
            if (r > 0 && size != width_) {
                width_ = -1;
                break;
            }
            width_ = size;
        }
    }
    size_t rows() const { return output_.row_starts.size() - 1; }
    int64_t width() const { return width_; }  // tokens of every row, -1 when rows differ in length

    // A buffer by its name in the BatchEncoding (or in BatchOutput, for the maps' buffers).
    const std::vector<int64_t>& buffer(const std::string& name) const {
        if (name == "input_ids") return output_.input_ids;
        if (name == "attention_mask") return output_.attention_mask;
        if (name == "token_type_ids") return output_.token_type_ids;
        if (name == "special_tokens_mask") return output_.special_tokens_mask;
        if (name == "offset_mapping") return output_.offsets;
        if (name == "length") return output_.lengths;
        if (name == "overflow_to_sample_mapping") return output_.samples;
        if (name == "row_starts") return output_.row_starts;
        if (name == "layouts") return output_.layouts;
        throw py::key_error(name);
    }
    // Each row of a per-token field as a list of ints.
    py::list row_lists(const std::string& name) const;
    // Word ids of the tokens of source `source` (an encoded sequence) before truncation.
    py::list word_ids(int64_t source) const;
    // (start, end) of every token of row `row`.
    py::list offsets(int64_t row) const;

private:
    BatchOutput output_;
    int64_t width_ = -1;
};

py::list EncodedRows::row_lists(const std::string& name) const {
    static IntCache& ints = *new IntCache();  // never destroyed: no Py_DECREF after the interpreter ends
    const std::vector<int64_t>& values = buffer(name);
    if (name == "offset_mapping" || values.size() != output_.input_ids.size())
        throw py::value_error(name + " is not a per-token field of this encoding");
    GcPause pause;
    const auto& starts = output_.row_starts;
    py::list rows(starts.size() - 1);
    for (size_t r = 0; r + 1 < starts.size(); ++r) {
        const auto begin = static_cast<size_t>(starts[r]), end = static_cast<size_t>(starts[r + 1]);
        py::list row(end - begin);
        for (size_t i = begin; i < end; ++i) PyList_SET_ITEM(row.ptr(), i - begin, ints.get(values[i]));
        PyList_SET_ITEM(rows.ptr(), r, row.release().ptr());
    }
    return rows;
}

py::list EncodedRows::word_ids(int64_t source) const {
    const auto& starts = output_.word_starts;
    if (source < 0 || static_cast<size_t>(source) + 1 >= starts.size())
        throw py::index_error("source " + std::to_string(source) + " is out of range");
    py::list out;
    for (int64_t i = starts[source]; i < starts[source + 1]; ++i) out.append(output_.word_ids[i]);
    return out;
}

py::list EncodedRows::offsets(int64_t row) const {
    if (output_.offsets.empty() && !output_.input_ids.empty()) throw py::value_error("this encoding has no offsets");
    const auto& starts = output_.row_starts;
    if (row < 0 || static_cast<size_t>(row) >= rows()) throw py::index_error("row " + std::to_string(row) + " is out of range");
    py::list out;
    for (int64_t i = starts[row]; i < starts[row + 1]; ++i)
        out.append(py::make_tuple(output_.offsets[2 * i], output_.offsets[2 * i + 1]));
    return out;
}

}  // namespace

// The function the batch encoder calls on each piece of text between added tokens, and the
// code points per thread that pay for a thread's start (~10-20 us) with it.
struct PreTokenizerFunction {
    PreTokenize function;
    size_t min_chars_per_thread;
};

// Measured over the whole encode_texts path (pre-tokenizer, BPE, rows; 2-core KVM machine of
// bench/results): ~0.11 us a code point with the Moses pipeline, a second thread paying from
// ~1,500 code points; ~0.045 us with the whitespace split, paying from ~6,000.
constexpr size_t kMosesCharsPerThread = 768, kWhitespaceCharsPerThread = 3072;

// pre_tokenizer (a WhitespaceSplit: bypass_tokenizer=True, or a MosesPipeline: the whole
// Moses pipeline of one language) -> its PreTokenizerFunction. Both are immutable, so the
// batch's threads share them.
PreTokenizerFunction pre_tokenizer_function(const py::object& pre_tokenizer) {
    if (py::isinstance<WhitespaceSplit>(pre_tokenizer)) {
        const WhitespaceSplit* split = pre_tokenizer.cast<const WhitespaceSplit*>();
        return {[split](std::u32string_view text, PreTokenized& out) { (*split)(text, out); },
                kWhitespaceCharsPerThread};
    }
    if (py::isinstance<xlm_moses::MosesPipeline>(pre_tokenizer)) {
        const auto* moses = pre_tokenizer.cast<const xlm_moses::MosesPipeline*>();
        return {[moses](std::u32string_view text, PreTokenized& out) { (*moses)(text, out); }, kMosesCharsPerThread};
    }
    throw py::type_error("pre_tokenizer must be a WhitespaceSplit or a MosesPipeline");
}

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

    py::class_<WhitespaceSplit>(m, "WhitespaceSplit",
                                "Pre-tokenizer of bypass_tokenizer=True: str.split() with character spans.")
        .def(py::init([](const py::object& spaces) {
                 const py::object items = as_sequence(spaces.ptr(), PySequence_Tuple,
                                                      []() { return std::string("spaces must be a list of int"); });
                 std::vector<uint32_t> codes;
                 for (const auto& code : py::reinterpret_borrow<py::tuple>(items))
                     codes.push_back(static_cast<uint32_t>(checked_int(code, "spaces[i]", 0, 0x10FFFF)));
                 return std::make_unique<WhitespaceSplit>(codes);
             }),
             py::arg("spaces"), "`spaces`: the code points for which str.isspace() is True.");
    py::class_<AddedTokens>(m, "AddedTokens", "Added tokens {content: id}, cut out of text before pre-tokenization.")
        .def(py::init([](const py::dict& tokens) {
                 std::vector<std::pair<std::u32string, int32_t>> items;
                 for (const auto& item : tokens) {
                     std::u32string content;
                     if (!read_code_points(item.first.ptr(), content))
                         throw py::type_error("added tokens must be str");
                     items.emplace_back(std::move(content),
                                        static_cast<int32_t>(checked_int(item.second, "added token id", 0, kMaxId)));
                 }
                 return std::make_unique<AddedTokens>(items);
             }),
             py::arg("tokens"));
    py::class_<EncodeOptions>(m, "EncodeOptions",
                              "The options of encode_texts / encode_words, read and checked once from a dict (keys as "
                              "in csrc/batch_encoder.h's EncodeOptions; strategies as str or None).")
        .def(py::init([](const py::dict& options) { return read_options(options); }), py::arg("options"));
    py::class_<EncodedRows>(m, "EncodedRows",
                            "The rows of one encode_texts / encode_words call, in C++ buffers: `array(name)` views a "
                            "buffer as a 1-D int64 array (no copy), `row_lists(name)` gives a per-token field as lists "
                            "of row lists; word_ids(source) and offsets(row) serve the BatchEncoding's maps.")
        .def_property_readonly("rows", &EncodedRows::rows)
        .def_property_readonly("width",
                               [](const EncodedRows& self) -> py::object {
                                   return self.width() < 0 ? py::object(py::none()) : py::object(py::int_(self.width()));
                               },
                               "Tokens of every row, None when the rows differ in length.")
        .def(
            "array",
            [](const py::object& self, const std::string& name) {
                const std::vector<int64_t>& values = self.cast<const EncodedRows&>().buffer(name);
                return py::array_t<int64_t>({static_cast<py::ssize_t>(values.size())},
                                            {static_cast<py::ssize_t>(sizeof(int64_t))}, values.data(), self);
            },
            py::arg("name"), "A buffer as a 1-D int64 array that keeps this object alive (no copy).")
        .def("row_lists", &EncodedRows::row_lists, py::arg("name"))
        .def("word_ids", &EncodedRows::word_ids, py::arg("source"))
        .def("offsets", &EncodedRows::offsets, py::arg("row"));
    m.def(
        "encode_texts",
        [](BPEModel& model, const AddedTokens& added, const py::object& pre_tokenizer, const py::object& texts,
           const py::object& pairs, const EncodeOptions& checked) {
            std::vector<std::u32string> owned;
            read_texts(texts, "text", owned);
            const size_t count = owned.size();
            if (!pairs.is_none()) {
                read_texts(pairs, "text_pair", owned);
                if (owned.size() != 2 * count) throw py::value_error("text_pair must have one entry per text");
            }
            const PreTokenizerFunction pre_tokenize = pre_tokenizer_function(pre_tokenizer);
            BatchOutput output;
            {
                py::gil_scoped_release release;  // reads only C++ objects: `owned` and the immutable models
                output = encode_texts(model, added, pre_tokenize.function, pre_tokenize.min_chars_per_thread, owned,
                                      !pairs.is_none(), checked);
            }
            return EncodedRows(std::move(output));
        },
        py::arg("model"), py::arg("added_tokens"), py::arg("pre_tokenizer"), py::arg("texts"), py::arg("pairs"),
        py::arg("options"),
        "Texts (then their pairs) -> flat int64 arrays of every row: added tokens, pre-tokenizer, BPE, special "
        "tokens, truncation, padding, offsets; threaded without the GIL.");
    m.def(
        "pre_tokenize_count",
        [](const py::object& pre_tokenizer, const py::object& texts) {
            std::vector<std::u32string> owned;
            read_texts(texts, "texts", owned);
            const PreTokenizerFunction pre_tokenize = pre_tokenizer_function(pre_tokenizer);
            size_t words = 0;
            {
                py::gil_scoped_release release;  // reads only `owned` and the immutable pre-tokenizer
                PreTokenized out;
                for (const std::u32string& text : owned) {
                    pre_tokenize.function(text, out);
                    words += out.words.size();
                }
            }
            return words;
        },
        py::arg("pre_tokenizer"), py::arg("texts"),
        "The pre-tokenizer of encode_texts alone on each text (no added-token split, one thread): the number of "
        "words. For the stage profile of bench/bench_tokenization_xlm.py.");
    m.def(
        "encode_words",
        [](BPEModel& model, const py::object& sequences, bool pairs, const EncodeOptions& checked,
           const py::object& spans) {
            if (checked.offsets == spans.is_none())
                throw py::value_error("encode_words: options.offsets needs spans, and spans need options.offsets");
            std::vector<WordSequence> owned = read_word_sequences(sequences);
            if (!spans.is_none()) read_word_spans(spans, owned);
            if (pairs && owned.size() % 2) throw py::value_error("sequences: pairs need an even count");
            BatchOutput output;
            {
                py::gil_scoped_release release;  // reads only `owned` and the model
                output = encode_words(model, owned, pairs, checked);
            }
            return EncodedRows(std::move(output));
        },
        py::arg("model"), py::arg("sequences"), py::arg("pairs"), py::arg("options"), py::arg("spans") = py::none(),
        "Pre-tokenized sequences (added token ids and lists of words; pairs after the firsts) -> the rows of "
        "encode_texts; offsets from `spans` (one flat array per sequence: [start, end) of each added token and each "
        "code point of each word, in order) when options.offsets.");
}

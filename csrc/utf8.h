// UTF-8 helpers: bytes <-> code points. Lone surrogates travel as their 3-byte sequences
// (Python's "surrogatepass"), so every str reaches C++ and comes back unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace xlm_fast {

// Byte length of the UTF-8 sequence starting with `lead` (Python str -> UTF-8 is valid).
inline size_t utf8_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if ((lead >> 5) == 0x6) return 2;
    if ((lead >> 4) == 0xE) return 3;
    return 4;
}

// Byte length of code point `code` in UTF-8 (surrogates: 3, as append_code_point writes them).
inline size_t utf8_size(uint32_t code) { return code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4; }

// Code point of the `length`-byte UTF-8 sequence at `text`.
inline uint32_t code_point(const char* text, size_t length) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(text);
    if (length == 1) return bytes[0];
    uint32_t value = bytes[0] & (0x7F >> length);
    for (size_t i = 1; i < length; ++i) value = (value << 6) | (bytes[i] & 0x3F);
    return value;
}

// Appends the UTF-8 bytes of code point `code` (any value < 0x110000, surrogates included).
inline void append_code_point(uint32_t code, std::string& out) {
    if (code < 0x80) {
        out.push_back(static_cast<char>(code));
    } else if (code < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (code >> 6)));
        out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (code >> 12)));
        out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (code >> 18)));
        out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
}

}  // namespace xlm_fast

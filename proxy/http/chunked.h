// Chunked transfer coding (RFC 9112 §7.1) as the proxy writes it when it re-frames a body: each
// piece that arrives goes out as one chunk, then the last chunk. One writer for requests and
// responses alike; `Out` is anything with copy(string_view) and ref(const char*, size_t)
// (net::OutBatch), so this layer needs no I/O.
#pragma once

#include <charconv>
#include <cstddef>
#include <string_view>

namespace sy::http {

template <class Out>
void append_chunk(Out& out, const char* data, size_t n) {
  char line[24];
  auto [end, ec] = std::to_chars(line, line + 20, n, 16);
  *end++ = '\r';
  *end++ = '\n';
  out.copy(std::string_view(line, static_cast<size_t>(end - line)));
  out.ref(data, n);
  out.copy("\r\n");
}

// The last chunk, with the trailer section `trailer_lines` ("name: value\r\n" each, already
// filtered by append_trailer_lines) when there is one.
template <class Out>
void append_last_chunk(Out& out, std::string_view trailer_lines = {}) {
  if (trailer_lines.empty()) {
    out.copy("0\r\n\r\n");
    return;
  }
  out.copy("0\r\n");
  out.copy(trailer_lines);
  out.copy("\r\n");
}

}  // namespace sy::http

// One parsed HTTP message head (request line or status line + header fields), stored in one
// arena that keeps its capacity between messages: parsing a head allocates nothing once warm.
// Filled by llhttp callbacks (see parser_hooks.h); no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sy::http {

struct Span {
  uint32_t off = 0;
  uint32_t len = 0;
};

struct Header {
  Span name;
  Span value;
};

bool iequals(std::string_view a, std::string_view b);

class MessageHead {
 public:
  void clear();

  // Accumulators for llhttp's split callbacks (a name or value may arrive in several pieces).
  void add_url(const char* at, size_t n);
  void add_reason(const char* at, size_t n);
  void add_field(const char* at, size_t n);
  void add_value(const char* at, size_t n);

  std::string_view view(Span s) const { return std::string_view(arena_.data() + s.off, s.len); }
  std::string_view url() const { return view(url_); }
  std::string_view reason() const { return view(reason_); }
  std::string_view name(size_t i) const { return view(headers_[i].name); }
  std::string_view value(size_t i) const { return view(headers_[i].value); }
  size_t count() const { return headers_.size(); }
  // First header with this name (case-insensitive), or nullptr-like empty optional.
  bool find(std::string_view name, std::string_view& value) const;
  size_t bytes() const { return arena_.size(); }

  uint8_t http_major = 1;
  uint8_t http_minor = 1;
  int method = 0;  // llhttp_method_t for requests
  int status = 0;  // for responses

 private:
  enum class Last { kNone, kUrl, kField, kValue };
  std::string arena_;
  Span url_{}, reason_{};
  std::vector<Header> headers_;
  Last last_ = Last::kNone;
};

}  // namespace sy::http

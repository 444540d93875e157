// MessageHead: header storage for parsed messages.
#include "proxy/http/head.h"

#include "proxy/http/ascii.h"

namespace sy::http {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

void MessageHead::clear() {
  arena_.clear();
  headers_.clear();
  url_ = reason_ = {};
  last_ = Last::kNone;
  http_major = 1;
  http_minor = 1;
  method = 0;
  status = 0;
}

void MessageHead::add_url(const char* at, size_t n) {
  if (last_ != Last::kUrl) url_.off = static_cast<uint32_t>(arena_.size());
  arena_.append(at, n);
  url_.len += static_cast<uint32_t>(n);
  last_ = Last::kUrl;
}

void MessageHead::add_reason(const char* at, size_t n) {
  if (reason_.len == 0) reason_.off = static_cast<uint32_t>(arena_.size());
  arena_.append(at, n);
  reason_.len += static_cast<uint32_t>(n);
}

void MessageHead::add_field(const char* at, size_t n) {
  if (last_ != Last::kField) {
    headers_.push_back(Header{{static_cast<uint32_t>(arena_.size()), 0}, {}});
  }
  arena_.append(at, n);
  headers_.back().name.len += static_cast<uint32_t>(n);
  last_ = Last::kField;
}

void MessageHead::add_value(const char* at, size_t n) {
  if (headers_.empty()) return;  // llhttp never does this; be safe
  Header& h = headers_.back();
  if (last_ != Last::kValue) h.value.off = static_cast<uint32_t>(arena_.size());
  arena_.append(at, n);
  h.value.len += static_cast<uint32_t>(n);
  last_ = Last::kValue;
}

bool MessageHead::find(std::string_view name, std::string_view& value) const {
  for (const auto& h : headers_) {
    if (iequals(view(h.name), name)) {
      value = view(h.value);
      return true;
    }
  }
  return false;
}

}  // namespace sy::http

// gRPC request recognition and the proxy's errors as gRPC statuses (see grpc.h).
#include "proxy/http/grpc.h"

#include <algorithm>

#include "proxy/http/rewrite.h"

namespace sy::http {

bool is_grpc(const MessageHead& req) {
  std::string_view ct;
  if (!req.find("content-type", ct)) return false;
  constexpr std::string_view kGrpc = "application/grpc";
  if (ct.size() < kGrpc.size() || !iequals(ct.substr(0, kGrpc.size()), kGrpc)) return false;
  return ct.size() == kGrpc.size() || ct[kGrpc.size()] == '+' || ct[kGrpc.size()] == ';';
}

int grpc_status_in(const MessageHead& h, size_t first) {
  for (size_t i = first; i < h.count(); ++i) {
    if (!iequals(h.name(i), "grpc-status")) continue;
    std::string_view v = h.value(i);
    if (v.empty() || v.size() > 2) return -1;
    int code = 0;
    for (char ch : v) {
      if (ch < '0' || ch > '9') return -1;
      code = code * 10 + (ch - '0');
    }
    return code <= 16 ? code : -1;
  }
  return -1;
}

bool parse_grpc_timeout(std::string_view v, int64_t& ms) {
  // gRPC over HTTP/2: TimeoutValue is at most 8 ASCII digits, then one unit letter.
  if (v.size() < 2 || v.size() > 9) return false;
  int64_t n = 0;
  for (char ch : v.substr(0, v.size() - 1)) {
    if (ch < '0' || ch > '9') return false;
    n = n * 10 + (ch - '0');
  }
  int64_t ns_per_unit = 0;
  switch (v.back()) {
    case 'H': ns_per_unit = 3'600'000'000'000; break;
    case 'M': ns_per_unit = 60'000'000'000; break;
    case 'S': ns_per_unit = 1'000'000'000; break;
    case 'm': ns_per_unit = 1'000'000; break;
    case 'u': ns_per_unit = 1'000; break;
    case 'n': ns_per_unit = 1; break;
    default: return false;
  }
  // 99,999,999 hours in ms fits an int64 comfortably; round partial milliseconds up.
  if (ns_per_unit >= 1'000'000) {
    ms = n * (ns_per_unit / 1'000'000);
  } else {
    const int64_t per_ms = 1'000'000 / ns_per_unit;
    ms = (n + per_ms - 1) / per_ms;
  }
  return true;
}

namespace {
void put_varint(uint64_t v, std::string& out) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// A protobuf varint at `p` (at most 10 bytes); false when truncated or too long.
bool get_varint(std::string_view& p, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 70 && !p.empty(); shift += 7) {
    const auto b = static_cast<unsigned char>(p.front());
    p.remove_prefix(1);
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}
}  // namespace

void build_health_request(std::string_view service, std::string& out) {
  std::string msg;
  if (!service.empty()) {  // proto3: an empty string is not written
    msg.push_back(0x0a);   // field 1, length-delimited
    put_varint(service.size(), msg);
    msg.append(service);
  }
  out.push_back('\0');  // not compressed
  const uint32_t n = static_cast<uint32_t>(msg.size());
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xff));
  out.append(msg);
}

bool parse_health_response(std::string_view body, int& serving) {
  if (body.size() < 5 || body[0] != '\0') return false;  // (a compressed answer we did not ask for)
  uint32_t n = 0;
  for (int i = 1; i <= 4; ++i) n = (n << 8) | static_cast<unsigned char>(body[static_cast<size_t>(i)]);
  if (body.size() - 5 != n) return false;
  std::string_view p = body.substr(5);
  serving = 0;
  while (!p.empty()) {
    uint64_t key = 0, v = 0;
    if (!get_varint(p, key)) return false;
    switch (key & 7) {
      case 0:  // varint
        if (!get_varint(p, v)) return false;
        if (key >> 3 == 1) serving = static_cast<int>(std::min<uint64_t>(v, 1000));
        break;
      case 1:  // 64-bit
        if (p.size() < 8) return false;
        p.remove_prefix(8);
        break;
      case 2:  // length-delimited (a field a newer server may add)
        if (!get_varint(p, v) || v > p.size()) return false;
        p.remove_prefix(static_cast<size_t>(v));
        break;
      case 5:  // 32-bit
        if (p.size() < 4) return false;
        p.remove_prefix(4);
        break;
      default:
        return false;
    }
  }
  return true;
}

const char* serving_status_name(int serving) {
  switch (serving) {
    case 0: return "UNKNOWN";
    case 1: return "SERVING";
    case 2: return "NOT_SERVING";
    case 3: return "SERVICE_UNKNOWN";
    default: return "unrecognised";
  }
}

int grpc_status_for(int http_status, std::string_view code) {
  constexpr int kUnknown = 2, kDeadlineExceeded = 4, kPermissionDenied = 7, kResourceExhausted = 8,
                kUnimplemented = 12, kInternal = 13, kUnavailable = 14, kUnauthenticated = 16;
  if (code == "no_route") return kUnimplemented;
  if (code == "no_healthy_upstream" || code == "overloaded" || code == "upstream_failed" || code == "shutting_down")
    return kUnavailable;
  if (code == "upstream_timeout" || code == "request_timeout") return kDeadlineExceeded;
  if (code == "rate_limited" || code == "body_too_large" || code == "headers_too_large") return kResourceExhausted;
  switch (http_status) {
    case 400: return kInternal;
    case 401: return kUnauthenticated;
    case 403: return kPermissionDenied;
    case 404: return kUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504: return kUnavailable;
    default: return kUnknown;
  }
}

void append_grpc_message(std::string_view message, std::string& out) {
  static const char* hex = "0123456789ABCDEF";
  for (unsigned char ch : message) {
    if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
      out.push_back(static_cast<char>(ch));
    } else {
      out.push_back('%');
      out.push_back(hex[ch >> 4]);
      out.push_back(hex[ch & 15]);
    }
  }
}

void build_grpc_error_response(int grpc_status, std::string_view code, std::string_view message, bool close,
                               std::string& out, std::string_view extra) {
  out.append("HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\ngrpc-status: ");
  append_uint(out, static_cast<uint64_t>(grpc_status));
  out.append("\r\ngrpc-message: ");
  append_grpc_message(message, out);
  out.append("\r\nx-switchyard-error: ");
  out.append(code);
  out.append(close ? "\r\nContent-Length: 0\r\nConnection: close\r\n" : "\r\nContent-Length: 0\r\n");
  out.append(extra);
  out.append("\r\n");
}

}  // namespace sy::http

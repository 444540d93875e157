// Head rewriting for forwarded requests and responses.
#include "proxy/http/rewrite.h"

#include "proxy/http/ascii.h"

#include <llhttp.h>

#include <cstdio>
#include <random>

#include <charconv>
#include <cstdio>

namespace sy::http {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

void header(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

}  // namespace

void append_uint(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<size_t>(end - buf));
}

bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view t = trim(list.substr(0, comma));
    if (iequals(t, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

void connection_tokens(const MessageHead& h, std::string& out) {
  out.clear();
  for (size_t i = 0; i < h.count(); ++i) {
    if (!iequals(h.name(i), "connection")) continue;
    if (!out.empty()) out.append(", ");
    for (char c : h.value(i)) out.push_back(ascii_lower(c));
  }
}

bool is_hop_by_hop(std::string_view name, std::string_view tokens) {
  // Every fixed hop-by-hop name starts with c, k, t, u or p: most headers are out after one test.
  const char first = name.empty() ? 0 : static_cast<char>(name[0] | 0x20);
  if (first != 'c' && first != 'k' && first != 't' && first != 'u' && first != 'p')
    return !tokens.empty() && has_token(tokens, name);
  static constexpr std::string_view kFixed[] = {"connection", "keep-alive", "te", "trailer", "transfer-encoding",
                                                "upgrade", "content-length", "proxy-connection"};
  for (auto f : kFixed)
    if (iequals(name, f)) return true;
  if (name.size() >= 6 && iequals(name.substr(0, 6), "proxy-")) return true;
  return !tokens.empty() && has_token(tokens, name);
}

bool forwardable_trailer(std::string_view name) {
  if (name.empty() || name[0] == ':') return false;
  return !is_hop_by_hop(name, {}) && !iequals(name, "host");
}

void append_trailer_line(std::string_view name, std::string_view value, std::string& out) {
  if (!forwardable_trailer(name) || !valid_field_value(value)) return;
  for (char c : name) out.push_back(ascii_lower(c));
  out += ": ";
  out += value;
  out += "\r\n";
}

void append_trailer_lines(const MessageHead& h, size_t first, std::string& out) {
  for (size_t i = first; i < h.count(); ++i) append_trailer_line(h.name(i), h.value(i), out);
}

bool valid_field_value(std::string_view v) {
  for (unsigned char c : v) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

void upstream_request_fields(const MessageHead& req, const RequestForward& f, FieldSink add, void* ctx) {
  // (Reused per thread: a request with a Connection header, an XFF or a Via costs no allocation.)
  thread_local std::string tokens, joined;
  connection_tokens(req, tokens);
  bool have_xfp = false, have_xfh = false, have_rid = false, have_host = false;
  std::string_view xff, via, host;
  for (size_t i = 0; i < req.count(); ++i) {
    std::string_view n = req.name(i), v = req.value(i);
    if (is_hop_by_hop(n, tokens)) {
      if (f.upgrade && iequals(n, "upgrade")) add(ctx, "Upgrade", v);
      continue;
    }
    // Headers the proxy appends to are emitted once, below, with its own part added.
    if (iequals(n, "x-forwarded-for")) {
      xff = v;  // several XFF headers are rare; the last one wins the append
      continue;
    }
    if (iequals(n, "via")) {
      via = v;
      continue;
    }
    if (iequals(n, "host")) {
      have_host = true;
      host = v;
    } else if (iequals(n, "x-forwarded-proto")) {
      if (f.tls) continue;  // ours, below: the scheme this hop really used
      have_xfp = true;
    } else if (iequals(n, "x-forwarded-client-cert")) {
      continue;
    } else if (iequals(n, "x-forwarded-host")) {
      have_xfh = true;
    } else if (iequals(n, "x-request-id")) {
      have_rid = !v.empty();
      if (!have_rid) continue;
    }
    add(ctx, n, v);
  }
  if (f.upgrade) add(ctx, "Connection", "upgrade");
  joined.clear();
  if (!xff.empty()) joined.append(xff).append(", ");
  joined.append(f.client_ip);
  add(ctx, "X-Forwarded-For", joined);
  if (!have_xfp) add(ctx, "X-Forwarded-Proto", f.tls ? "https" : "http");
  if (!f.client_cert.empty()) add(ctx, "X-Forwarded-Client-Cert", f.client_cert);
  if (!have_xfh && have_host) add(ctx, "X-Forwarded-Host", host);
  if (!have_rid) add(ctx, "X-Request-Id", f.request_id);
  joined.clear();
  if (!via.empty()) joined.append(via).append(", ");
  joined.append(req.http_major == 2 ? "2.0 " : req.http_minor == 0 ? "1.0 " : "1.1 ");
  joined.append(via_marker());
  add(ctx, "Via", joined);
}

void build_upstream_request(const MessageHead& req, const RequestForward& f, std::string& out) {
  out.append(f.method);
  out.push_back(' ');
  out.append(f.target);
  out.append(" HTTP/1.1\r\n");
  switch (f.framing) {
    case Framing::kLength:
      out.append("Content-Length: ");
      append_uint(out, f.content_length);
      out.append("\r\n");
      break;
    case Framing::kChunked:
      header(out, "Transfer-Encoding", "chunked");
      break;
    default:
      break;
  }
  upstream_request_fields(
      req, f, [](void* o, std::string_view n, std::string_view v) { header(*static_cast<std::string*>(o), n, v); }, &out);
  out.append("\r\n");
}

bool forwardable_request(const MessageHead& req, bool& looped) {
  // HTTP/0.9 (no version) is not spoken here; 2.0 comes from the HTTP/2 codec, whose library
  // checked the framing and connection-specific headers already (RFC 9113 §8.2.2).
  if (req.http_major != 1 && req.http_major != 2) return false;
  if (req.method == HTTP_CONNECT || req.method == HTTP_PRI) return false;
  int hosts = 0;
  const std::string_view marker = via_marker();
  for (size_t i = 0; i < req.count(); ++i) {
    const std::string_view name = req.name(i), value = req.value(i);
    if (iequals(name, "host")) ++hosts;
    else if (iequals(name, "transfer-encoding") && !iequals(value, "chunked")) return false;
    // Our own Via marker: this request has been through this process already (a registration
    // that points back at us under some name the admin API could not see through).
    else if (iequals(name, "via") && value.find(marker) != std::string_view::npos) looped = true;
  }
  if (req.http_major == 2) return hosts <= 1;  // :authority became the one Host
  return hosts == 1 || (hosts == 0 && req.http_minor == 0);
}

std::string_view via_marker() {
  // A comment after the pseudonym is allowed by Via's grammar (RFC 9110 §7.6.3).
  static const std::string marker = [] {
    std::random_device rd;
    char id[32];
    std::snprintf(id, sizeof id, "%08x%08x", rd(), rd());
    return std::string("switchyard (") + id + ")";
  }();
  return marker;
}

void build_downstream_response(const MessageHead& resp, const ResponseForward& f, std::string& out) {
  std::string tokens;
  connection_tokens(resp, tokens);
  out.append("HTTP/1.1 ");
  append_uint(out, static_cast<uint64_t>(resp.status));
  out.push_back(' ');
  out.append(resp.reason().empty() ? status_reason(resp.status) : resp.reason());
  out.append("\r\n");
  std::string_view via;
  for (size_t i = 0; i < resp.count(); ++i) {
    std::string_view n = resp.name(i), v = resp.value(i);
    if (is_hop_by_hop(n, tokens)) {
      if (f.upgrade && iequals(n, "upgrade")) header(out, "Upgrade", v);
      // HEAD and 304 carry the length of the representation, not of a body: keep it as is.
      if (f.head_or_304 && iequals(n, "content-length")) header(out, n, v);
      continue;
    }
    if (iequals(n, "via")) {
      via = v;
      continue;
    }
    header(out, n, v);
  }
  switch (f.framing) {
    case Framing::kLength:
      out.append("Content-Length: ");
      append_uint(out, f.content_length);
      out.append("\r\n");
      break;
    case Framing::kChunked:
      header(out, "Transfer-Encoding", "chunked");
      break;
    default:
      break;
  }
  if (f.upgrade) header(out, "Connection", "upgrade");
  else if (f.close) header(out, "Connection", "close");
  else if (f.keep_alive_10) header(out, "Connection", "keep-alive");
  out.append("Via: ");
  if (!via.empty()) {
    out.append(via);
    out.append(", ");
  }
  out.append(resp.http_major == 2 ? "2.0 switchyard\r\n" : resp.http_minor == 0 ? "1.0 switchyard\r\n" : "1.1 switchyard\r\n");
  out.append(f.extra);
  out.append("\r\n");
}

const char* status_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 508: return "Loop Detected";
    default: return status < 400 ? "OK" : (status < 500 ? "Client Error" : "Server Error");
  }
}

void build_error_body(std::string_view code, std::string_view message, std::string& body) {
  // Messages are ours, never client bytes, so no JSON escaping beyond quotes is needed; escape
  // anyway so a future caller passing user text cannot break the JSON.
  body.append("{\"error\": \"");
  body.append(code);
  body.append("\", \"message\": \"");
  for (char c : message) {
    if (c == '"' || c == '\\') body.push_back('\\');
    if (static_cast<unsigned char>(c) < 0x20) continue;
    body.push_back(c);
  }
  body.append("\"}\n");
}

void build_error_response(int status, std::string_view code, std::string_view message, bool close, std::string& out,
                          std::string_view extra) {
  std::string body;
  build_error_body(code, message, body);
  out.append("HTTP/1.1 ");
  append_uint(out, static_cast<uint64_t>(status));
  out.push_back(' ');
  out.append(status_reason(status));
  out.append("\r\nContent-Type: application/json\r\nx-switchyard-error: ");
  out.append(code);
  out.append("\r\nContent-Length: ");
  append_uint(out, body.size());
  out.append(close ? "\r\nConnection: close\r\n" : "\r\n");
  out.append(extra);
  out.append("\r\n");
  out.append(body);
}

}  // namespace sy::http

// Builds the heads switchyard sends: the upstream request and the downstream response.
// Pure functions of a parsed MessageHead and the forwarding decisions; no I/O (RFC 9110 §7.6,
// RFC 9112 §6-7). Hop-by-hop headers are dropped here and the message is re-framed.
#pragma once

#include <string>
#include <string_view>

#include "proxy/http/head.h"

namespace sy::http {

// How a message body is delimited on the wire.
enum class Framing { kNone, kLength, kChunked, kUntilClose };

struct RequestForward {
  std::string_view method;      // "GET"
  std::string_view target;      // request-target to send (after strip_prefix)
  std::string_view client_ip;   // appended to X-Forwarded-For
  std::string_view request_id;  // used when the request has no X-Request-Id
  // The client's connection was TLS: X-Forwarded-Proto is https whatever the client wrote.
  bool tls = false;
  // X-Forwarded-Client-Cert to send ("" = none). A client's own such header is never passed on:
  // only the proxy, which verified the certificate, may say who the client is.
  std::string_view client_cert;
  Framing framing = Framing::kNone;
  uint64_t content_length = 0;
  bool upgrade = false;  // keep Upgrade and send "Connection: upgrade"
};

// May this request head (as llhttp parsed it into `req`, method and version set) be forwarded?
// Smuggling and framing checks beyond llhttp's strict mode (which already refuses control
// characters and bare CR/LF in fields): HTTP/1.x only (not 0.9, not 2.0's preface), exactly one
// Host for 1.1, a Transfer-Encoding that is exactly "chunked" (anything else cannot be re-framed
// safely), no CONNECT. `looped` is set when a Via carries this process's marker. One pass over
// the fields; the proxy and the fuzz target call the same function.
bool forwardable_request(const MessageHead& req, bool& looped);

// What this process adds to a request's Via: "switchyard (<random id>)", the id fixed for the
// life of the process. A request arriving with it has come back through this very proxy.
std::string_view via_marker();

// Appends the upstream request head (HTTP/1.1: request line, headers, blank line) to `out`.
void build_upstream_request(const MessageHead& req, const RequestForward& f, std::string& out);

// The upstream request's fields, for either codec: the client's fields but hop-by-hop and framing
// ones, then X-Forwarded-For/-Proto/-Host/-Client-Cert, X-Request-Id and Via as this hop makes
// them; `add(ctx, name, value)` once per field (values valid during the call only). Host is
// among them (HTTP/2 makes it :authority). The request line and framing are the codec's.
using FieldSink = void (*)(void* ctx, std::string_view name, std::string_view value);
void upstream_request_fields(const MessageHead& req, const RequestForward& f, FieldSink add, void* ctx);

struct ResponseForward {
  Framing framing = Framing::kNone;
  uint64_t content_length = 0;
  bool close = false;          // "Connection: close" (and the proxy closes after this response)
  bool keep_alive_10 = false;  // an HTTP/1.0 client asked for keep-alive and gets it
  bool upgrade = false;        // 101: keep Upgrade, "Connection: upgrade"
  bool head_or_304 = false;    // no body follows; keep Content-Length as it was
  std::string_view extra;      // header lines of the proxy's own ("Name: value\r\n" each): rate limits
};

// Appends the downstream response head to `out`.
void build_downstream_response(const MessageHead& resp, const ResponseForward& f, std::string& out);

// True for headers never forwarded (RFC 9110 §7.6.1), including framing headers which the proxy
// rewrites itself; `connection_tokens` is the comma-separated union of the Connection headers.
bool is_hop_by_hop(std::string_view name, std::string_view connection_tokens);

// Trailer fields (RFC 9110 §6.5) the proxy relays, from either side and over either protocol:
// all but hop-by-hop and framing fields, pseudo-headers and Host. Lower-cased names (HTTP/2 wants
// them so; HTTP/1.1 does not care).
bool forwardable_trailer(std::string_view name);
// Appends the forwardable trailer fields of `h` from field `first` on as "name: value\r\n" lines.
void append_trailer_lines(const MessageHead& h, size_t first, std::string& out);
// One such line (name lower-cased), if forwardable_trailer(name) and the value is valid.
void append_trailer_line(std::string_view name, std::string_view value, std::string& out);

// Joins every Connection header's value with ", " into `out` (lower-cased).
void connection_tokens(const MessageHead& h, std::string& out);
bool has_token(std::string_view list, std::string_view token);

// Appends `v` in decimal (the heads' numbers: Content-Length, Retry-After).
void append_uint(std::string& out, uint64_t v);

// Field-value check beyond llhttp: no NUL, no control characters other than HTAB, no bare CR/LF.
bool valid_field_value(std::string_view v);

// The body of the proxy's own error answers: {"error": code, "message": message} and a newline.
void build_error_body(std::string_view code, std::string_view message, std::string& body);

// The proxy's own error response: JSON {"error","message"} + x-switchyard-error.
// `extra`: header lines of the proxy's own ("Name: value\r\n" each), such as Retry-After.
void build_error_response(int status, std::string_view code, std::string_view message, bool close,
                          std::string& out, std::string_view extra = {});
const char* status_reason(int status);

}  // namespace sy::http

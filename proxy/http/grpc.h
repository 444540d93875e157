// gRPC over HTTP (content-type application/grpc...): recognising a gRPC request, and the proxy's
// own error answers as gRPC statuses, so a gRPC client library reports UNAVAILABLE or
// DEADLINE_EXCEEDED instead of a bare "HTTP 503" protocol error (as Envoy maps them).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/http/head.h"

namespace sy::http {

// The request's content-type is application/grpc, alone or with a suffix (+proto, +json, ;...).
bool is_grpc(const MessageHead& req);

// The grpc-status among the fields of `h` from index `first` on (a trailers-only head, or the
// trailer section appended to a head): 0..16, or -1 when there is none or it is not a number.
int grpc_status_in(const MessageHead& h, size_t first = 0);

// A grpc-timeout value ("1S", "250m", "100000u": 1..8 digits and a unit H M S m u n), as whole
// milliseconds rounded up (a deadline of 1 ns is still a deadline). false: absent or malformed, no
// deadline (gRPC's own servers ignore a malformed one too).
bool parse_grpc_timeout(std::string_view v, int64_t& ms);

// grpc.health.v1.Health/Check, as health_check.type: grpc sends it: the length-prefixed gRPC message
// of HealthCheckRequest{service} (protobuf field 1, a string), appended to `out`.
void build_health_request(std::string_view service, std::string& out);
// The ServingStatus of a HealthCheckResponse body (one length-prefixed message; field 1, a varint:
// 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN; absent = 0). false: not such a message.
bool parse_health_response(std::string_view body, int& serving);
const char* serving_status_name(int serving);

// The gRPC status for one of the proxy's own errors (code as in x-switchyard-error): the mapping
// the contract gives (no route 12, unavailable 14, timeout 4, rate limited / too large 8), else
// gRPC's HTTP-to-status table for the HTTP status.
int grpc_status_for(int http_status, std::string_view code);

// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses"): bytes outside
// 0x20..0x7E and '%' become %XX.
void append_grpc_message(std::string_view message, std::string& out);

// The proxy's own error to an HTTP/1.1 gRPC client: 200, the status in the head, no body (HTTP/1.1
// has no trailers-only form). `extra` as build_error_response's.
void build_grpc_error_response(int grpc_status, std::string_view code, std::string_view message, bool close,
                               std::string& out, std::string_view extra = {});

}  // namespace sy::http

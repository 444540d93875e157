// What one client exchange was, as the request path reports it when the exchange ends: the one
// record the access log writes and the metrics count (both read it; neither owns the request path).
// Views into the connection's storage, valid for the duration of the report only.
#pragma once

#include <cstdint>
#include <string_view>

namespace sy::http {

struct ExchangeRecord {
  std::string_view client;
  std::string_view method;
  std::string_view path;
  std::string_view host;
  int status = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  double seconds = 0;
  std::string_view service;
  std::string_view instance;
  int attempts = 0;
  std::string_view request_id;
  std::string_view error;
  // A rate-limit policy that refused the request (or, in dry_run, would have): its name.
  std::string_view rate_limited;
  // The client's TLS (all "" on a plain connection): "TLSv1.3", the SNI it sent, the ALPN chosen.
  std::string_view tls_version;
  std::string_view tls_sni;
  std::string_view alpn;
  std::string_view protocol;  // "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"
  // The client's codec, as the metrics label it: "http1" (1.0 and 1.1) or "h2".
  bool http2 = false;
  // A gRPC call (its method is `path`), and the grpc-status its client got (the instance's, or the
  // proxy's own error's); -1 when it got none (cut by a reset).
  bool grpc = false;
  int grpc_status = -1;
  void* service_stats = nullptr;  // health::ServiceRuntime::stats, when the service is known
};

}  // namespace sy::http

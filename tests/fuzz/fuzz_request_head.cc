// libFuzzer target: a client's request head through llhttp (strict mode, as the proxy builds it)
// into a MessageHead, then rewritten for the upstream as the proxy does. Finds crashes, leaks and
// undefined behaviour in the head store and the rewriter; the rewritten head must parse again.
#include <llhttp.h>

#include <cstdint>
#include <string>

#include "proxy/http/head.h"
#include "proxy/http/rewrite.h"
#include "tests/fuzz/head_capture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const llhttp_settings_t s = fuzz::head_settings(true);
  fuzz::HeadCapture ctx;
  llhttp_t parser;
  llhttp_init(&parser, HTTP_REQUEST, &s);
  parser.data = &ctx;
  llhttp_execute(&parser, reinterpret_cast<const char*>(data), size);
  bool looped = false;
  if (!ctx.complete || !sy::http::forwardable_request(ctx.head, looped)) return 0;  // the proxy answers 400
  sy::http::RequestForward f;
  f.method = llhttp_method_name(static_cast<llhttp_method_t>(ctx.head.method));
  f.target = ctx.head.url();
  f.client_ip = "127.0.0.1";
  f.request_id = "0123456789abcdef0123456789abcdef";
  f.framing = (parser.flags & F_CHUNKED) ? sy::http::Framing::kChunked : sy::http::Framing::kLength;
  f.content_length = parser.content_length;
  f.upgrade = parser.upgrade != 0;
  std::string out;
  sy::http::build_upstream_request(ctx.head, f, out);
  // What we send must itself be a well-formed request head.
  llhttp_settings_t s2;
  llhttp_settings_init(&s2);
  s2.on_headers_complete = [](llhttp_t*) { return static_cast<int>(HPE_PAUSED); };
  llhttp_t again;
  llhttp_init(&again, HTTP_REQUEST, &s2);
  const llhttp_errno_t err = llhttp_execute(&again, out.data(), out.size());
  if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE && err != HPE_OK) {
    // The input head was accepted by strict llhttp, so its rewrite must be acceptable too.
    __builtin_trap();
  }
  return 0;
}

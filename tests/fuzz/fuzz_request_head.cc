// libFuzzer target: a client's request head through llhttp (strict mode, as the proxy builds it)
// into a MessageHead, then rewritten for the upstream as the proxy does. Finds crashes, leaks and
// undefined behaviour in the head store and the rewriter; the rewritten head must parse again.
#include <llhttp.h>

#include <cstdint>
#include <string>

#include "proxy/http/head.h"
#include "proxy/http/rewrite.h"

namespace {

struct Ctx {
  sy::http::MessageHead head;
  bool complete = false;
};

int on_url(llhttp_t* p, const char* at, size_t n) {
  static_cast<Ctx*>(p->data)->head.add_url(at, n);
  return 0;
}
int on_field(llhttp_t* p, const char* at, size_t n) {
  static_cast<Ctx*>(p->data)->head.add_field(at, n);
  return static_cast<Ctx*>(p->data)->head.bytes() > 64 * 1024 ? -1 : 0;
}
int on_value(llhttp_t* p, const char* at, size_t n) {
  static_cast<Ctx*>(p->data)->head.add_value(at, n);
  return static_cast<Ctx*>(p->data)->head.bytes() > 64 * 1024 ? -1 : 0;
}
int on_headers_complete(llhttp_t* p) {
  auto* c = static_cast<Ctx*>(p->data);
  c->head.method = p->method;
  c->head.http_major = p->http_major;
  c->head.http_minor = p->http_minor;
  c->complete = true;
  return HPE_PAUSED;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_url = on_url;
  s.on_header_field = on_field;
  s.on_header_value = on_value;
  s.on_headers_complete = on_headers_complete;
  Ctx ctx;
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

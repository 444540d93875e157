// libFuzzer target: a backend's response head through llhttp into a MessageHead, then rewritten
// for the client (every framing), as the proxy does.
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

int on_status(llhttp_t* p, const char* at, size_t n) {
  static_cast<Ctx*>(p->data)->head.add_reason(at, n);
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
  c->head.status = p->status_code;
  c->head.http_major = p->http_major;
  c->head.http_minor = p->http_minor;
  c->complete = true;
  return HPE_PAUSED;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_status = on_status;
  s.on_header_field = on_field;
  s.on_header_value = on_value;
  s.on_headers_complete = on_headers_complete;
  Ctx ctx;
  llhttp_t parser;
  llhttp_init(&parser, HTTP_RESPONSE, &s);
  parser.data = &ctx;
  llhttp_execute(&parser, reinterpret_cast<const char*>(data), size);
  if (!ctx.complete) return 0;
  for (int framing = 0; framing < 4; ++framing) {
    sy::http::ResponseForward f;
    f.framing = static_cast<sy::http::Framing>(framing);
    f.content_length = parser.content_length;
    f.close = framing & 1;
    f.keep_alive_10 = framing == 2;
    f.upgrade = ctx.head.status == 101;
    f.head_or_304 = ctx.head.status == 304;
    std::string out;
    sy::http::build_downstream_response(ctx.head, f, out);
    if (out.size() < 4 || out.compare(out.size() - 4, 4, "\r\n\r\n") != 0) __builtin_trap();
  }
  return 0;
}

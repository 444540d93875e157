// libFuzzer target: a backend's response head through llhttp into a MessageHead, then rewritten
// for the client (every framing), as the proxy does.
#include <llhttp.h>

#include <cstdint>
#include <string>

#include "proxy/http/head.h"
#include "proxy/http/rewrite.h"
#include "tests/fuzz/head_capture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const llhttp_settings_t s = fuzz::head_settings(false);
  fuzz::HeadCapture ctx;
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

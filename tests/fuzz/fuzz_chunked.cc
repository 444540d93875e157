// libFuzzer target: a chunked request body (after a fixed head) through llhttp, re-framed as the
// proxy re-frames it (one chunk per piece llhttp hands over), parsed again: the body that comes
// out must be the body that went in.
#include <llhttp.h>

#include <charconv>
#include <cstdint>
#include <string>

namespace {

struct Ctx {
  std::string body;
  bool done = false;
};

llhttp_settings_t settings() {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_body = [](llhttp_t* p, const char* at, size_t n) {
    static_cast<Ctx*>(p->data)->body.append(at, n);
    return 0;
  };
  s.on_message_complete = [](llhttp_t* p) {
    static_cast<Ctx*>(p->data)->done = true;
    return static_cast<int>(HPE_PAUSED);
  };
  return s;
}

const char kHead[] = "POST /up HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const llhttp_settings_t s = settings();
  std::string in(kHead);
  in.append(reinterpret_cast<const char*>(data), size);
  Ctx first;
  llhttp_t p;
  llhttp_init(&p, HTTP_REQUEST, &s);
  p.data = &first;
  llhttp_execute(&p, in.data(), in.size());
  if (!first.done) return 0;
  // Re-frame: chunks of up to 7 bytes (the proxy writes one chunk per read; any split is valid).
  std::string out(kHead);
  for (size_t i = 0; i < first.body.size(); i += 7) {
    const size_t n = std::min<size_t>(7, first.body.size() - i);
    char line[24];
    auto r = std::to_chars(line, line + 20, n, 16);
    out.append(line, r.ptr).append("\r\n").append(first.body, i, n).append("\r\n");
  }
  out.append("0\r\n\r\n");
  Ctx second;
  llhttp_init(&p, HTTP_REQUEST, &s);
  p.data = &second;
  llhttp_execute(&p, out.data(), out.size());
  if (!second.done || second.body != first.body) __builtin_trap();
  return 0;
}

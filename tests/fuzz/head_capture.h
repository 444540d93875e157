// Shared by the head fuzz targets: llhttp callbacks that fill a MessageHead as the proxy does
// (with its 64 KiB head limit), and stop at the end of the head.
#pragma once

#include <llhttp.h>

#include "proxy/http/head.h"

namespace fuzz {

struct HeadCapture {
  sy::http::MessageHead head;
  bool complete = false;
};

inline int too_big(llhttp_t* p) { return static_cast<HeadCapture*>(p->data)->head.bytes() > 64 * 1024 ? -1 : 0; }

// Settings for a request (url) or a response (status line) head.
inline llhttp_settings_t head_settings(bool request) {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  if (request) {
    s.on_url = [](llhttp_t* p, const char* at, size_t n) {
      static_cast<HeadCapture*>(p->data)->head.add_url(at, n);
      return 0;
    };
  } else {
    s.on_status = [](llhttp_t* p, const char* at, size_t n) {
      static_cast<HeadCapture*>(p->data)->head.add_reason(at, n);
      return 0;
    };
  }
  s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
    static_cast<HeadCapture*>(p->data)->head.add_field(at, n);
    return too_big(p);
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
    static_cast<HeadCapture*>(p->data)->head.add_value(at, n);
    return too_big(p);
  };
  s.on_headers_complete = [](llhttp_t* p) {
    auto* c = static_cast<HeadCapture*>(p->data);
    c->head.method = p->method;
    c->head.status = p->status_code;
    c->head.http_major = p->http_major;
    c->head.http_minor = p->http_minor;
    c->complete = true;
    return static_cast<int>(HPE_PAUSED);
  };
  return s;
}

}  // namespace fuzz

// ProxyStream, the request side: the client connection's llhttp callbacks — the head into the
// exchange's storage, the client.* limits (413, 414, 431), framing, the body streamed up (and kept
// for a replay while it fits kReplayLimit). The parsing loop that drives them is the connection's
// (DownstreamConn::process_input).
#include "proxy/net/tcp_conn.h"
#include "proxy/server/proxy_stream.h"

namespace sy::server {

// A request over a client.* limit: the connection's parsing loop answers `status` (with `why`).
int ProxyStream::over_limit(int status, const char* why) {
  s_->error_status = status;
  s_->error_code = why;
  return -1;
}

const llhttp_settings_t* ProxyStream::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t x;
    llhttp_settings_init(&x);
    x.on_message_begin = cb_message_begin;
    x.on_url = cb_url;
    x.on_header_field = cb_header_field;
    x.on_header_value = cb_header_value;
    x.on_headers_complete = cb_headers_complete;
    x.on_body = cb_body;
    x.on_message_complete = cb_message_complete;
    return x;
  }();
  return &s;
}

int ProxyStream::cb_message_begin(llhttp_t* p) {
  auto* st = static_cast<ProxyStream*>(p->data);
  st->x_->req.clear();
  st->x_->rate_headers.clear();
  st->s_->message_begun = true;
  st->s_->started_ns = uv_hrtime();
  st->c_.state_ = ClientSide::State::kReadingHead;
  st->c_.arm(st->c_.cfg_->client.header_timeout);
  return 0;
}

int ProxyStream::cb_url(llhttp_t* p, const char* at, size_t n) {
  auto* st = static_cast<ProxyStream*>(p->data);
  st->x_->req.add_url(at, n);
  if (st->x_->req.url().size() > st->c_.cfg_->client.max_uri_bytes) return st->over_limit(414, "the request-target is longer than client.max_uri_bytes");
  return 0;
}

int ProxyStream::cb_header_field(llhttp_t* p, const char* at, size_t n) {
  auto* st = static_cast<ProxyStream*>(p->data);
  st->x_->req.add_field(at, n);
  if (st->x_->req.count() > st->c_.cfg_->client.max_headers) return st->over_limit(431, "more header fields than client.max_headers");
  if (st->x_->req.bytes() > st->c_.cfg_->client.max_header_bytes) return st->over_limit(431, "the request head is larger than client.max_header_bytes");
  return 0;
}

int ProxyStream::cb_header_value(llhttp_t* p, const char* at, size_t n) {
  auto* st = static_cast<ProxyStream*>(p->data);
  // llhttp accepts obs-fold (a value continued on the next line after SP/HTAB, RFC 9112 §5.2)
  // and hands the continuation as another piece. A piece preceded by LF + whitespace is one.
  const char* q = at;
  const char* const start = st->c_.h1_input()->data;
  while (q > start && (q[-1] == ' ' || q[-1] == '\t')) --q;
  if (q > start && q[-1] == '\n') return -1;
  st->x_->req.add_value(at, n);
  if (st->x_->req.bytes() > st->c_.cfg_->client.max_header_bytes) return st->over_limit(431, "the request head is larger than client.max_header_bytes");
  return 0;
}

int ProxyStream::cb_headers_complete(llhttp_t* p) {
  auto* st = static_cast<ProxyStream*>(p->data);
  st->x_->req.http_major = p->http_major;
  st->x_->req.http_minor = p->http_minor;
  st->x_->req.method = p->method;
  if (!http::forwardable_request(st->x_->req, st->s_->looped)) return -1;
  if (p->flags & F_CHUNKED) {
    st->s_->req_framing = http::Framing::kChunked;
  } else if (p->flags & F_CONTENT_LENGTH) {
    st->s_->req_framing = http::Framing::kLength;
    st->s_->req_content_length = p->content_length;
    const uint64_t max = st->c_.cfg_->client.max_body_bytes;
    if (max && p->content_length > max) return st->over_limit(413, "the request body is larger than client.max_body_bytes");
  } else {
    st->s_->req_framing = http::Framing::kNone;
  }
  st->s_->upgrade = p->upgrade != 0;
  st->s_->paused_at_head = true;
  // A request with a body pauses here, so no body byte is consumed before an upstream exists.
  // One without a body runs on to its end first: then an early answer (404, 503) can keep the
  // connection, because the request is wholly read.
  return st->s_->req_framing == http::Framing::kNone ? 0 : HPE_PAUSED;
}

int ProxyStream::cb_body(llhttp_t* p, const char* at, size_t n) {
  auto* st = static_cast<ProxyStream*>(p->data);
  st->s_->body_in += n;
  const uint64_t max = st->c_.cfg_->client.max_body_bytes;
  if (max && st->s_->body_in > max) return st->over_limit(413, "the request body is larger than client.max_body_bytes");
  if (st->s_->replayable) {
    if (st->x_->replay.size() + n <= kReplayLimit) {
      st->x_->replay.append(at, n);
    } else {
      st->s_->replayable = false;  // streamed past the replay limit: this request is never replayed
      st->x_->replay.clear();
    }
  }
  if (!st->s_->up) return 0;
  st->s_->up->send_body(at, n, false);
  return 0;
}

int ProxyStream::cb_message_complete(llhttp_t* p) {
  auto* st = static_cast<ProxyStream*>(p->data);
  st->s_->request_done = true;
  st->s_->paused_at_end = true;
  if (st->s_->up) st->s_->up->send_end({});
  if (st->s_->upgrade) return 0;  // llhttp itself pauses with HPE_PAUSED_UPGRADE
  return HPE_PAUSED;
}

}  // namespace sy::server

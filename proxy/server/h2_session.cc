// H2Session and H2Stream: HTTP/2 from clients on libnghttp2 (see h2_session.h).
#include "proxy/server/h2_session.h"

#include <llhttp.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "proxy/http/ascii.h"
#include "proxy/http/chunked.h"
#include "proxy/http/grpc.h"
#include "proxy/http/rewrite.h"
#include "proxy/net/assert.h"
#include "proxy/net/log.h"
#include "proxy/server/downstream_conn.h"

namespace sy::server {

namespace {

// :method to llhttp's number (the exchange and the upstream request speak llhttp's methods).
int method_number(std::string_view m) {
#define SY_METHOD(num, name, string) \
  if (m == #string) return num;
  HTTP_METHOD_MAP(SY_METHOD)
#undef SY_METHOD
  return -1;
}

nghttp2_nv nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())), reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())),
          name.size(), value.size(), NGHTTP2_NV_FLAG_NONE};
}

// The head is built as name/value offsets into one string first, then pointed at, so growing the
// string cannot leave a pointer behind. The storage is the thread's, reused by every head it
// builds (the library copies the fields when a head is submitted, before the next is built): no
// allocation per response once it has grown to the largest head.
struct HeadScratch {
  std::string buf;
  std::vector<std::pair<http::Span, http::Span>> at;
  std::vector<nghttp2_nv> nva;
};
thread_local HeadScratch head_scratch;

struct HeadBuilder {
  std::string& buf = head_scratch.buf;
  std::vector<std::pair<http::Span, http::Span>>& at = head_scratch.at;
  HeadBuilder() {
    buf.clear();
    at.clear();
  }
  HeadBuilder(const HeadBuilder&) = delete;
  HeadBuilder& operator=(const HeadBuilder&) = delete;
  void add(std::string_view name, std::string_view value, bool lower) {
    http::Span n{static_cast<uint32_t>(buf.size()), static_cast<uint32_t>(name.size())};
    if (lower) {
      for (char ch : name) buf.push_back(http::ascii_lower(ch));
    } else {
      buf.append(name);
    }
    http::Span v{static_cast<uint32_t>(buf.size()), static_cast<uint32_t>(value.size())};
    buf.append(value);
    at.push_back({n, v});
  }
  void add_number(std::string_view name, uint64_t v) {
    char num[24];
    auto [end, ec] = std::to_chars(num, num + sizeof num, v);
    (void)ec;
    add(name, std::string_view(num, static_cast<size_t>(end - num)), false);
  }
  // "Name: value\r\n" lines of the proxy's own (rate limits, Retry-After).
  void add_lines(std::string_view lines) {
    while (!lines.empty()) {
      size_t eol = lines.find("\r\n");
      std::string_view line = lines.substr(0, eol);
      size_t colon = line.find(':');
      if (colon != std::string_view::npos) {
        std::string_view v = line.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
        add(line.substr(0, colon), v, true);
      }
      if (eol == std::string_view::npos) break;
      lines.remove_prefix(eol + 2);
    }
  }
  // Valid until the next head is built.
  const std::vector<nghttp2_nv>& nvs() const {
    std::vector<nghttp2_nv>& out = head_scratch.nva;
    out.clear();
    for (const auto& [n, v] : at)
      out.push_back(nv(std::string_view(buf.data() + n.off, n.len), std::string_view(buf.data() + v.off, v.len)));
    return out;
  }
};

}  // namespace

// ---- the stream ----

H2Stream::H2Stream(H2Session& h, int32_t id) : h_(&h), id_(id), ps_(h.w_, *this) {
  uv_timer_init(h.w_.loop, &timer_);
  timer_.data = this;
  const DownstreamConn& c = h.c_;
  cfg_ = c.cfg_;
  client_ip_ = c.client_ip_;
  client_cert_ = c.client_cert_;
  state_ = State::kReadingHead;
  ps_.take_storage();
  ps_.x_->req.clear();
  ps_.x_->rate_headers.clear();
  ps_.x_->req.http_major = 2;
  ps_.x_->req.http_minor = 0;
  ps_.s_->message_begun = true;
  ps_.s_->started_ns = uv_hrtime();
  arm(cfg_->client.header_timeout);  // the head (HEADERS + CONTINUATIONs) must be complete by then
}

const net::TlsSession* H2Stream::tls() const { return h_ ? h_->c_.tls() : nullptr; }

bool H2Stream::on_header(std::string_view name, std::string_view value) {
  http::MessageHead& req = ps_.x_->req;
  const conf::ClientLimits& lim = cfg_->client;
  header_bytes_ += name.size() + value.size() + 32;  // RFC 9113 §6.5.2's size of a field
  if (header_bytes_ > cfg_->http2.max_header_list_bytes || header_bytes_ > lim.max_header_bytes) {
    if (!head_error_) ps_.over_limit(431, "the request head is larger than http2.max_header_list_bytes or client.max_header_bytes");
    head_error_ = true;
    return true;
  }
  if (!name.empty() && name[0] == ':') {
    if (name == ":method") {
      req.method = method_number(value);
      if (req.method < 0) return false;  // not a method llhttp (and so the upstream request) knows
    } else if (name == ":path") {
      req.add_url(value.data(), value.size());
      if (value.size() > lim.max_uri_bytes && !head_error_) {
        ps_.over_limit(414, "the request-target is longer than client.max_uri_bytes");
        head_error_ = true;
      }
    } else if (name == ":authority") {
      authority_.assign(value);
    }
    return true;  // (:scheme: the hop's scheme is what X-Forwarded-Proto says)
  }
  if (name == "cookie") {
    if (!cookie_.empty()) cookie_.append("; ");
    cookie_.append(value);
    return true;
  }
  if (name == "host" && !authority_.empty()) return true;  // :authority wins (RFC 9113 §8.3.1)
  req.add_field(name.data(), name.size());
  req.add_value(value.data(), value.size());
  if (req.count() > lim.max_headers && !head_error_) {
    ps_.over_limit(431, "more header fields than client.max_headers");
    head_error_ = true;
  }
  return true;
}

void H2Stream::on_head_complete(bool end_stream) {
  ProxyStream::ExchangeState& s = *ps_.s_;
  http::MessageHead& req = ps_.x_->req;
  if (!authority_.empty()) {
    std::string_view host;
    if (!req.find("host", host)) {
      req.add_field("host", 4);
      req.add_value(authority_.data(), authority_.size());
    }
  }
  if (!cookie_.empty()) {
    req.add_field("cookie", 6);
    req.add_value(cookie_.data(), cookie_.size());
  }
  s.request_done = end_stream;
  if (head_error_) {
    ps_.send_error(s.error_status, s.error_status == 431 ? "headers_too_large" : "uri_too_long", s.error_code, true);
    return;
  }
  std::string_view cl;
  if (req.find("content-length", cl)) {
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(cl.data(), cl.data() + cl.size(), n);
    (void)end;
    (void)ec;  // (the library checked it is a number and that the DATA agrees)
    s.req_framing = http::Framing::kLength;
    s.req_content_length = n;
    const uint64_t max = cfg_->client.max_body_bytes;
    if (max && n > max) {
      ps_.send_error(413, "body_too_large", "the request body is larger than client.max_body_bytes", true);
      return;
    }
  } else {
    s.req_framing = end_stream ? http::Framing::kNone : http::Framing::kChunked;
  }
  if (req.method == HTTP_CONNECT || !http::forwardable_request(req, s.looped)) {
    ps_.send_error(400, "bad_request", "malformed request: CONNECT and several Host values are not forwarded over HTTP/2", true);
    return;
  }
  ps_.begin();
}

void H2Stream::on_data(const uint8_t* p, size_t n) {
  ProxyStream::ExchangeState& s = *ps_.s_;
  if (s.response_done && !s.up) {
    // Answered already (an error, a 413 by content-length): the rest is read and thrown away.
    nghttp2_session_consume(h_->s_, id_, n);
    return;
  }
  unconsumed_ += n;
  body_quiet_since_ms_ = static_cast<int64_t>(uv_now(h_->w_.loop));
  s.body_in += n;
  const uint64_t max = cfg_->client.max_body_bytes;
  if (max && s.body_in > max) {
    if (ps_.answered()) ps_.abort();
    else ps_.send_error(413, "body_too_large", "the request body is larger than client.max_body_bytes", true);
    return;
  }
  const char* at = reinterpret_cast<const char*>(p);
  if (s.replayable) {
    if (ps_.x_->replay.size() + n <= ProxyStream::kReplayLimit) {
      ps_.x_->replay.append(at, n);
    } else {
      s.replayable = false;  // streamed past the replay limit: this request is never replayed
      ps_.x_->replay.clear();
    }
  }
  if (s.up && head_went_) {
    body_up(at, n);
    ps_.flush_upstream();
  } else {
    body_.append(at, n);  // bounded by the stream window: nothing is given back until it went up
  }
  // Every byte the content-length promised is here: the request is complete (the library refuses
  // DATA beyond it), whenever the client's END_STREAM follows — an empty DATA frame may come later,
  // and an instance failing meanwhile must find the request replayable, as over HTTP/1.1.
  if (s.req_framing == http::Framing::kLength && s.body_in >= s.req_content_length) on_request_end();
}

// The library's buffer is gone after the callback: DATA is copied towards the upstream (the one
// chunk writer, told to copy what it would refer to).
void H2Stream::body_up(const char* p, size_t n) {
  ps_.s_->up->send_body(p, n, true);
}

void H2Stream::on_request_end() {
  ProxyStream::ExchangeState& s = *ps_.s_;
  if (s.request_done || finished_) return;
  s.request_done = true;
  if (s.up && head_went_) {
    s.up->send_end(req_trailers_);
    ps_.flush_upstream();
  }
}

// The head just went up (send_request_head): the body received so far follows it.
void H2Stream::process_input() {
  ProxyStream::ExchangeState& s = *ps_.s_;
  if (!s.up) return;
  if (head_went_) return;  // a retry: the head carried the kept body (replay) already
  head_went_ = true;
  if (!body_.empty()) {
    body_up(body_.data(), body_.size());
    std::string().swap(body_);
  }
  if (s.request_done) s.up->send_end(req_trailers_);
}

void H2Stream::start_reading() {
  if (!h_) return;
  body_quiet_since_ms_ = static_cast<int64_t>(uv_now(h_->w_.loop));
  if (unconsumed_ == 0 || !body_.empty() || (ps_.s_->up && ps_.s_->up->write_pending())) return;
  nghttp2_session_consume(h_->s_, id_, unconsumed_);  // WINDOW_UPDATEs: the client may send that much again
  unconsumed_ = 0;
  h_->send();
}

// An instance's response head as HTTP/2 fields: :status, then every field but the hop-by-hop
// ones (Content-Length too unless `keep_length`) and Via, whose value is returned (the caller adds
// ours to it).
static std::string_view add_response_fields(HeadBuilder& b, const http::MessageHead& head, bool keep_length) {
  b.add_number(":status", static_cast<uint64_t>(head.status));
  std::string tokens;
  http::connection_tokens(head, tokens);
  std::string_view via;
  for (size_t i = 0; i < head.count(); ++i) {
    std::string_view n = head.name(i), v = head.value(i);
    if (http::is_hop_by_hop(n, tokens)) {
      if (keep_length && http::iequals(n, "content-length")) b.add(n, v, true);
      continue;
    }
    if (http::iequals(n, "via")) {
      via = v;
      continue;
    }
    b.add(n, v, true);
  }
  return via;
}

// 100 Continue, 103 Early Hints: a HEADERS frame that does not end the stream, as many as came,
// before the final head (RFC 9113 §8.1). The library copies the fields.
void H2Stream::out_interim(const http::MessageHead& head, http::ResponseForward&) {
  if (!h_ || submitted_) return;
  HeadBuilder b;
  add_response_fields(b, head, false);
  const std::vector<nghttp2_nv>& nva = b.nvs();
  nghttp2_submit_headers(h_->s_, NGHTTP2_FLAG_NONE, id_, nullptr, nva.data(), nva.size(), nullptr);
}

void H2Stream::out_head(const http::MessageHead& head, http::ResponseForward& f) {
  HeadBuilder b;
  // Content-Length is kept when it frames the body: HTTP/2 may carry it, and HEAD/304 state the
  // representation's.
  std::string_view via = add_response_fields(b, head, f.framing == http::Framing::kLength || f.head_or_304);
  std::string via_value(via);
  if (!via_value.empty()) via_value.append(", ");
  via_value.append(head.http_major == 2 ? "2.0 switchyard" : head.http_minor == 0 ? "1.0 switchyard" : "1.1 switchyard");
  b.add("via", via_value, false);
  b.add_lines(f.extra);
  // No body at all (HEAD, 204, 304, an empty body of known length, gRPC's trailers-only answer):
  // the HEADERS frame ends the stream, as the client's library expects for trailers-only.
  no_body_ = f.framing == http::Framing::kNone || (f.framing == http::Framing::kLength && f.content_length == 0);
  submit(b.nvs());
}

// The head goes to the library; the body follows from down_ through the data source (none: the
// HEADERS frame ends the stream).
void H2Stream::submit(const std::vector<nghttp2_nv>& nva) {
  nghttp2_data_provider prd;
  prd.source.ptr = this;
  prd.read_callback = H2Session::on_read_data;
  submitted_ = true;
  if (h_) nghttp2_submit_response(h_->s_, id_, nva.data(), nva.size(), no_body_ ? nullptr : &prd);
}

void H2Stream::out_body(const char* p, size_t n) {
  if (no_body_) return;
  down_.append(p, n);
}

void H2Stream::out_trailers(const http::MessageHead& head, size_t first) {
  if (no_body_) return;
  for (size_t i = first; i < head.count(); ++i) {
    if (!http::forwardable_trailer(head.name(i)) || !http::valid_field_value(head.value(i))) continue;
    std::string name(head.name(i));
    http::ascii_lower_in_place(name);
    trailers_.push_back(std::move(name));
    trailers_.emplace_back(head.value(i));
  }
}

void H2Stream::out_end() { eof_ = true; }

void H2Stream::on_trailer(std::string_view name, std::string_view value) {
  header_bytes_ += name.size() + value.size() + 32;
  if (header_bytes_ > cfg_->http2.max_header_list_bytes) return;  // (the head's budget covers both)
  http::append_trailer_line(name, value, req_trailers_);
}

bool H2Stream::out_error(int status, std::string_view code, std::string_view message, std::string_view extra,
                         int grpc_status) {
  if (submitted_) {
    close();  // a response is under way: the stream can only be reset
    return false;
  }
  if (grpc_status >= 0) {
    // Trailers-only: one HEADERS frame with END_STREAM carries the status (gRPC over HTTP/2).
    std::string msg;
    http::append_grpc_message(message, msg);
    HeadBuilder b;
    b.add(":status", "200", false);
    b.add("content-type", "application/grpc", false);
    b.add_number("grpc-status", static_cast<uint64_t>(grpc_status));
    b.add("grpc-message", msg, false);
    b.add("x-switchyard-error", code, false);
    b.add_lines(extra);
    down_.clear();
    down_off_ = 0;
    eof_ = true;
    no_body_ = true;
    submit(b.nvs());
    return true;
  }
  std::string body;
  http::build_error_body(code, message, body);
  HeadBuilder b;
  b.add_number(":status", static_cast<uint64_t>(status));
  b.add("content-type", "application/json", false);
  b.add("x-switchyard-error", code, false);
  b.add_number("content-length", body.size());
  b.add_lines(extra);
  down_ = std::move(body);
  down_off_ = 0;
  eof_ = true;
  no_body_ = false;
  submit(b.nvs());
  return true;
}

int H2Stream::flush_client() {
  if (!h_) return finished_ ? int{net::OutBatch::kDone} : int{UV_ECONNRESET};
  if (deferred_) {
    deferred_ = false;
    nghttp2_session_resume_data(h_->s_, id_);
  }
  // The frames are made and written at the end of this loop turn, with the other streams'
  // (send_soon). Nothing queued (a head without a body yet): done, the head follows. Otherwise
  // pending until every byte went into frames (on_written), bounded by the windows.
  h_->send_soon();
  if (down_.size() == down_off_) return net::OutBatch::kDone;
  waiting_ = true;
  return net::OutBatch::kPending;
}

// As DownstreamConn::on_client_write: the queued bytes went out.
void H2Stream::on_written() {
  if (finished_ || state_ == State::kClosed) return;
  if (ps_.s_->response_done) {
    finish_exchange();
    return;
  }
  if (ps_.s_->up) ps_.s_->up->resume_reading();
}

void H2Stream::finish_exchange() {
  if (finished_) return;
  finished_ = true;
  ps_.finish();
  state_ = State::kClosed;
  uv_timer_stop(&timer_);
  // DATA the client still sends on this stream is given back at once (H2Session::on_data_chunk).
  if (h_ && unconsumed_) {
    nghttp2_session_consume(h_->s_, id_, unconsumed_);
    unconsumed_ = 0;
  }
}

void H2Stream::close() {
  if (finished_) return;
  finished_ = true;
  state_ = State::kClosed;
  ps_.drop_upstream();
  ps_.release_exchange();
  uv_timer_stop(&timer_);
  if (!h_) return;
  nghttp2_submit_rst_stream(h_->s_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_INTERNAL_ERROR);
  h_->send();
}

void H2Stream::detach(const char* why) {
  if (!h_) return;
  if (!finished_ && ps_.s_->response_done && eof_ && down_.size() == down_off_) {
    finish_exchange();  // the last frame went out and closed the stream: a complete exchange
  } else if (!finished_) {
    // The client reset the stream (or the connection went) before the exchange was over.
    finished_ = true;
    state_ = State::kClosed;
    ps_.record(why);
    ps_.drop_upstream();
    ps_.release_exchange();
  }
  H2Session& h = *h_;
  if (prev_) prev_->next_ = next_;
  else if (h.streams_ == this) h.streams_ = next_;
  if (next_) next_->prev_ = prev_;
  prev_ = next_ = nullptr;
  --h.active_;
  if (h.w_.observer) h.w_.observer->on_h2_streams(-1);
  h_ = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_timer_closed);
  if (h.active_ == 0) h.idle_check();
}

void H2Stream::on_timer_closed(uv_handle_t* t) { delete static_cast<H2Stream*>(t->data); }

void H2Stream::arm(int64_t ms) { uv_timer_start(&timer_, on_timer, static_cast<uint64_t>(ms), 0); }

void H2Stream::on_timer(uv_timer_t* t) {
  auto* st = static_cast<H2Stream*>(t->data);
  if (!st->h_ || st->finished_) return;
  ProxyStream& ps = st->ps_;
  if (st->state_ == State::kReadingHead) {
    // A head still incomplete (slowloris over HTTP/2): the library is mid-block and expects
    // only CONTINUATION on this connection, so the connection goes.
    H2Session* h = st->h_;  // (terminate detaches every stream, this one too)
    h->terminate(NGHTTP2_NO_ERROR, "header_timeout", "a request head did not complete within client.header_timeout");
    h->send();
    return;
  }
  if (st->state_ == State::kConnecting) {
    if (ps.s_->backoff) ps.on_backoff_over();
    return;
  }
  if (st->state_ != State::kForwarding || ps.s_->request_done || !ps.s_->head_done) return;
  // client.body_timeout: silence from the client while its window was open to it.
  const int64_t now = static_cast<int64_t>(uv_now(st->h_->w_.loop));
  const int64_t limit = st->cfg_->client.body_timeout.count();
  const bool our_pause = st->unconsumed_ > 0;  // we hold its window: the wait is ours
  const int64_t quiet = our_pause ? 0 : now - st->body_quiet_since_ms_;
  if (quiet < limit) {
    st->arm(our_pause ? limit : limit - quiet);
    return;
  }
  if (ps.s_->response_started) ps.abort();
  else ps.send_error(408, "request_timeout", "no request body bytes for client.body_timeout", true);
}

// ---- the session ----

H2Session::H2Session(Worker& w, DownstreamConn& c) : w_(w), c_(c) {}

H2Session::~H2Session() {
  w_.end_of_turn.remove(this);
  close_all("client_closed");
  if (s_) nghttp2_session_del(s_);
}

bool H2Session::start() {
  nghttp2_session_callbacks* cb = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) return false;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);  // windows open as bytes go upstream
  const conf::Http2& h = c_.cfg_->http2;
#ifdef SY_HAVE_NGHTTP2_MAX_CONTINUATIONS
  nghttp2_option_set_max_continuations(opt, 8);  // CVE-2024-28182
#endif
#ifdef SY_HAVE_NGHTTP2_STREAM_RESET_RATE_LIMIT
  // CVE-2023-44487 (rapid reset), besides the control-frame bucket below.
  nghttp2_option_set_stream_reset_rate_limit(opt, 2ull * h.max_control_frames_per_second, h.max_control_frames_per_second);
#endif
  nghttp2_option_set_max_settings(opt, 32);  // entries in one SETTINGS frame
  // Closed streams are kept only for the deprecated priority tree (RFC 9113 §5.3.2); without them
  // the stream map is empty, all zeros, once the last stream ended (H2Memory gives it back).
  nghttp2_option_set_no_closed_streams(opt, 1);
  // Response headers are encoded from the static table and as literals, as HAProxy's encoder
  // does: a dynamic table would hold up to 4 KiB of past responses' fields (dates, etags, request
  // ids that never repeat) in every idle connection.
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, 0);
  mem_.building(true);
  const int rc = nghttp2_session_server_new3(&s_, cb, this, opt, mem_.mem());
  mem_.building(false);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  if (rc != 0) return false;
  const nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(h.initial_stream_window)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(h.max_header_list_bytes)},
  };
  if (nghttp2_submit_settings(s_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0) return false;
  nghttp2_session_set_local_window_size(s_, NGHTTP2_FLAG_NONE, 0, static_cast<int32_t>(h.connection_window));
  tokens_ = 10.0 * h.max_control_frames_per_second;
  tokens_at_ms_ = uv_now(w_.loop);
  return true;
}

void H2Session::on_input(const char* p, size_t n) {
  if (closing_) return;
  in_recv_ = true;
  const ssize_t rc = nghttp2_session_mem_recv(s_, reinterpret_cast<const uint8_t*>(p), n);
  in_recv_ = false;
  if (rc < 0 && !terminating_) {
    // A protocol error, a flood the library caught (NGHTTP2_ERR_FLOODED) or a bad preface: the
    // library queued its GOAWAY where the protocol says so; ours says why otherwise.
    if (rc == NGHTTP2_ERR_FLOODED) terminate(NGHTTP2_ENHANCE_YOUR_CALM, "flood", "the library's flood limits");
    else terminate(NGHTTP2_PROTOCOL_ERROR, "protocol_error", nghttp2_strerror(static_cast<int>(rc)));
  }
  dirty_ = false;
  send();
}

void H2Session::send() {
  if (!s_ || closing_) return;
  if (in_recv_) {
    dirty_ = true;
    return;
  }
  if (sending_) {
    again_ = true;
    return;
  }
  sending_ = true;
  do {
    again_ = false;
    if (!out_.pending()) {
      for (;;) {
        const uint8_t* data = nullptr;
        const ssize_t n = nghttp2_session_mem_send(s_, &data);
        if (n < 0) {
          sending_ = false;
          c_.close();
          return;
        }
        if (n == 0) break;
        out_.copy(std::string_view(reinterpret_cast<const char*>(data), static_cast<size_t>(n)));
      }
      if (!out_.empty()) {
        const int rc = out_.flush(c_.sock_, on_write, this);
        if (rc < 0) {
          sending_ = false;
          c_.close();
          return;
        }
      }
    }
    // Streams whose bytes all went into frames carry on (they may queue more: `again_`).
    // (No send runs inside this one: on_written's sends set again_. Every stream in done_ is
    // alive: a detached stream is freed only when its timer has closed, a later loop phase.)
    done_.clear();
    done_.swap(written_);
    for (H2Stream* st : done_) {
      if (st->h_ && st->waiting_) {
        st->waiting_ = false;
        st->on_written();
      }
    }
    done_.clear();
    if (closing_) {
      sending_ = false;
      return;
    }
  } while (again_ || !written_.empty());
  sending_ = false;
  maybe_close();
}

void H2Session::send_soon() {
  if (s_ && !closing_) w_.end_of_turn.add(w_.loop, this);
}

void H2Session::on_write(uv_write_t* req, int status) {
  auto* h = static_cast<H2Session*>(req->data);
  h->out_.done();
  if (h->closing_) return;
  if (status < 0) {
    h->c_.close();
    return;
  }
  h->send();
}

void H2Session::maybe_close() {
  if (closing_ || out_.pending()) return;
  if (!nghttp2_session_want_read(s_) && !nghttp2_session_want_write(s_)) c_.close();
}

// With no stream open the connection waits client.idle_timeout for one. kQuietMs into that wait
// the library's frame buffer and our output scratch go back (H2Memory: thousands of idle
// connections cost a few KiB each, not 18); one timer does both, so a busy connection pays
// nothing for it.
void H2Session::idle_check() {
  if (closing_ || active_ != 0) return;
  if (terminating_) {
    c_.arm(1000);
    return;
  }
  idle_since_ms_ = uv_now(w_.loop);
  const int64_t idle = c_.cfg_->client.idle_timeout.count();
  quiet_due_ = idle > kQuietMs;
  c_.arm(quiet_due_ ? kQuietMs : idle);
}

void H2Session::on_timer() {
  if (closing_) return;
  if (active_ > 0 && !terminating_) return;
  if (!terminating_ && quiet_due_) {
    quiet_due_ = false;
    // Nothing waits to be sent: the frame buffer's contents are dead (see h2_memory.h).
    if (!out_.pending() && nghttp2_session_want_write(s_) == 0) {
      mem_.release_idle();
      out_.shrink();
      c_.sock_.trim_tls();
    }
    const int64_t left = c_.cfg_->client.idle_timeout.count() - static_cast<int64_t>(uv_now(w_.loop) - idle_since_ms_);
    if (left > 0) {
      c_.arm(left);
      return;
    }
  }
  if (!terminating_) {
    // client.idle_timeout with no stream open: GOAWAY, then close once it is out.
    terminating_ = true;
    c_.arm(1000);  // a client that does not read its GOAWAY is closed anyway
    goaway();
    send();
    return;
  }
  c_.close();
}

void H2Session::shutdown(const char* reason) {
  if (closing_ || terminating_ || draining_) return;
  draining_ = true;
  if (w_.observer) w_.observer->on_h2_goaway(reason);
  goaway();
  send();
}

// Graceful: the streams taken so far finish; later ones are refused.
void H2Session::goaway() {
  nghttp2_submit_goaway(s_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s_), NGHTTP2_NO_ERROR, nullptr, 0);
}

void H2Session::terminate(uint32_t code, const char* reason, const char* why) {
  if (terminating_) return;
  terminating_ = true;
  if (w_.observer) w_.observer->on_h2_goaway(reason);
  log::debug(std::string("http/2: closing a client connection: ") + why);
  nghttp2_session_terminate_session(s_, code);
  close_all(reason);
  c_.arm(1000);  // a client that does not read its GOAWAY is closed anyway
}

void H2Session::close_all(const char* why) {
  while (streams_) streams_->detach(why);
}

bool H2Session::spend_control_token() {
  const double rate = c_.cfg_->http2.max_control_frames_per_second;
  const uint64_t now = uv_now(w_.loop);
  tokens_ = std::min(10.0 * rate, tokens_ + rate * static_cast<double>(now - tokens_at_ms_) / 1000.0);
  tokens_at_ms_ = now;
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

// ---- nghttp2 callbacks ----

int H2Session::on_begin_headers(nghttp2_session* s, const nghttp2_frame* f, void* self) {
  auto* h = static_cast<H2Session*>(self);
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  if (h->terminating_ || h->w_.shutting_down) {
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
    return 0;
  }
  auto* st = new H2Stream(*h, f->hd.stream_id);
  st->next_ = h->streams_;
  if (h->streams_) h->streams_->prev_ = st;
  h->streams_ = st;
  if (h->active_++ == 0) uv_timer_stop(&h->c_.sock_.timer);  // the idle timer: streams time themselves
  if (h->w_.observer) h->w_.observer->on_h2_streams(1);
  nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
  return 0;
}

int H2Session::on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
                         const uint8_t* value, size_t valuelen, uint8_t, void*) {
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, f->hd.stream_id));
  if (!st || st->finished_) return 0;
  if (f->headers.cat != NGHTTP2_HCAT_REQUEST) {
    // The request's trailer section: up in the last chunk when the body goes chunked (no
    // content-length); a body sent with Content-Length has no place for it.
    st->on_trailer(std::string_view(reinterpret_cast<const char*>(name), namelen),
                   std::string_view(reinterpret_cast<const char*>(value), valuelen));
    return 0;
  }
  if (!st->on_header(std::string_view(reinterpret_cast<const char*>(name), namelen),
                     std::string_view(reinterpret_cast<const char*>(value), valuelen)))
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // RST_STREAM for this stream only
  return 0;
}

int H2Session::on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* self) {
  auto* h = static_cast<H2Session*>(self);
  const bool end_stream = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (f->hd.type) {
    case NGHTTP2_HEADERS: {
      auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, f->hd.stream_id));
      if (!st || st->finished_) return 0;
      if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        st->on_head_complete(end_stream);
      } else if (end_stream) {
        st->on_request_end();  // trailers end the request
      }
      return 0;
    }
    case NGHTTP2_DATA: {
      if (f->hd.length == 0 && !end_stream && !h->spend_control_token()) break;
      if (!end_stream) return 0;
      auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, f->hd.stream_id));
      if (st && !st->finished_) st->on_request_end();
      return 0;
    }
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
      if (f->hd.flags & NGHTTP2_FLAG_ACK) return 0;
      if (!h->spend_control_token()) break;
      return 0;
    // (WINDOW_UPDATE is not counted: a client reading a fast download sends one per few frames.)
    case NGHTTP2_PRIORITY:
    case NGHTTP2_RST_STREAM:
      if (!h->spend_control_token()) break;
      return 0;
    default:
      return 0;
  }
  h->terminate(NGHTTP2_ENHANCE_YOUR_CALM, "flood", "more frames without requests than http2.max_control_frames_per_second allows");
  return NGHTTP2_ERR_CALLBACK_FAILURE;
}

int H2Session::on_frame_send(nghttp2_session* s, const nghttp2_frame* f, void*) {
  // The response is complete while the client is still sending: tell it to stop (RFC 9113 §8.1).
  if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
  auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, f->hd.stream_id));
  if (st && !st->ps_.s_->request_done) nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
  return 0;
}

int H2Session::on_data_chunk(nghttp2_session* s, uint8_t, int32_t id, const uint8_t* data, size_t len, void*) {
  auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, id));
  if (!st || st->finished_) {
    nghttp2_session_consume(s, id, len);  // nobody wants it: the window back at once
    return 0;
  }
  st->on_data(data, len);
  return 0;
}

int H2Session::on_stream_close(nghttp2_session* s, int32_t id, uint32_t, void*) {
  auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, id));
  if (st) st->detach("client_reset");
  return 0;
}

ssize_t H2Session::on_read_data(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                                nghttp2_data_source* source, void* self) {
  auto* h = static_cast<H2Session*>(self);
  auto* st = static_cast<H2Stream*>(source->ptr);
  const size_t avail = st->down_.size() - st->down_off_;
  const size_t n = std::min(length, avail);
  if (n) std::memcpy(buf, st->down_.data() + st->down_off_, n);
  st->down_off_ += n;
  if (st->down_off_ == st->down_.size()) {
    st->down_.clear();
    st->down_off_ = 0;
    if (st->waiting_) h->written_.push_back(st);
    if (st->eof_) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!st->trailers_.empty()) {
        // END_STREAM goes on the trailing HEADERS instead (the library copies the fields).
        std::vector<nghttp2_nv> nva;
        nva.reserve(st->trailers_.size() / 2);
        for (size_t i = 0; i + 1 < st->trailers_.size(); i += 2) {
          auto& n = st->trailers_[i];
          auto& v = st->trailers_[i + 1];
          nva.push_back({reinterpret_cast<uint8_t*>(n.data()), reinterpret_cast<uint8_t*>(v.data()), n.size(), v.size(),
                         NGHTTP2_NV_FLAG_NONE});
        }
        if (nghttp2_submit_trailer(h->s_, st->id_, nva.data(), nva.size()) == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        st->trailers_.clear();
      }
    } else if (n == 0) {
      st->deferred_ = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

}  // namespace sy::server

// AdminConn: request in, whole; response out.
#include "proxy/admin/admin_conn.h"

#include <nlohmann/json.hpp>

#include "proxy/http/ascii.h"
#include "proxy/http/rewrite.h"
#include "proxy/net/assert.h"
#include "proxy/net/close.h"
#include "proxy/net/log.h"

namespace sy::admin {

namespace {
constexpr size_t kMaxBody = 1024 * 1024;
constexpr size_t kMaxHead = 64 * 1024;
constexpr uint64_t kLingerMs = 1000;

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string url_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
      i += 2;
    } else if (s[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string AdminRequest::header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return "";
}

std::string AdminRequest::decoded_path() const { return url_decode(path, false); }

void AdminRequest::parse_query(std::string_view q) {
  query = std::string(q);
  params.clear();
  while (!q.empty()) {
    const size_t amp = q.find('&');
    const std::string_view kv = q.substr(0, amp);
    const size_t eq = kv.find('=');
    if (!kv.empty())
      params.emplace_back(url_decode(kv.substr(0, eq)), eq == std::string_view::npos ? "" : url_decode(kv.substr(eq + 1)));
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
}

std::string AdminRequest::query_param(const std::string& name) const {
  for (const auto& [k, v] : params)
    if (k == name) return v;
  return "";
}

bool AdminRequest::has_param(const std::string& name) const {
  for (const auto& kv : params)
    if (kv.first == name) return true;
  return false;
}

AdminConn* AdminConn::live_ = nullptr;
size_t AdminConn::count_ = 0;
AdminLimits AdminConn::limits_;
std::shared_ptr<const net::TlsServerConfig> AdminConn::tls_;
AdminConn::TlsObserver AdminConn::tls_observer_ = nullptr;

void AdminConn::on_tls(void* owner, bool ok) {
  auto* c = static_cast<AdminConn*>(owner);
  if (tls_observer_ && c->tls_cfg_) tls_observer_(*c->tls_cfg_, *c->sock_.tls(), ok);
}

void AdminConn::close_all() {
  while (live_) live_->close();
}

AdminConn::AdminConn(uv_loop_t* loop, AdminHandler* h) : handler_(h) {
  next_ = live_;
  if (live_) live_->prev_ = this;
  live_ = this;
  ++count_;
  sock_.init(loop, this, net::thread_buffers());
  wreq_.data = this;
  parser_.init(HTTP_REQUEST, settings(), this);
}

void AdminConn::accept(uv_stream_t* server, AdminHandler* handler) {
  auto* c = new AdminConn(server->loop, handler);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->sock_.tcp)) != 0) {
    c->close();
    return;
  }
  if (tls_) {
    // Before anything is answered: even a refusal below goes out encrypted.
    if (auto session = net::TlsSession::server(*tls_)) {
      c->tls_cfg_ = tls_.get();
      c->sock_.start_tls(std::move(session), tls_, on_tls);
    }
  }
  if (count_ > limits_.max_connections) {
    // Answered, not dropped: the client learns why (and the operator from the log).
    log::warn("admin connection refused: " + std::to_string(count_ - 1) + " admin connections open (limit " +
              std::to_string(limits_.max_connections) + ")");
    c->refuse(503, "overloaded", "too many admin connections");
    return;
  }
  sockaddr_storage peer{};
  int len = sizeof peer;
  if (uv_tcp_getpeername(&c->sock_.tcp, reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
    char ip[INET6_ADDRSTRLEN] = "";
    if (peer.ss_family == AF_INET) uv_ip4_name(reinterpret_cast<const sockaddr_in*>(&peer), ip, sizeof ip);
    else uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(&peer), ip, sizeof ip);
    c->peer_ip_ = ip;
  }
  c->phase_ = Phase::kIdle;
  c->arm(limits_.header_timeout_ms);  // the first request's head must come within header_timeout
  c->sock_.read_start(on_read);
}

void AdminConn::arm(uint64_t ms) { uv_timer_start(&sock_.timer, on_timer, ms, 0); }

// Answers `status` with Connection: close, whatever the connection was doing.
void AdminConn::refuse(int status, const char* code, const std::string& message) {
  AdminResponse r;
  r.status = status;
  r.body = nlohmann::json{{"error", code}, {"message", message}}.dump() + "\n";
  keep_alive_ = false;
  busy_ = true;
  phase_ = Phase::kBusy;
  in_.clear();
  respond(r);
}

void AdminConn::on_timer(uv_timer_t* t) {
  auto* c = static_cast<AdminConn*>(t->data);
  const uint64_t now = uv_now(t->loop);
  switch (c->phase_) {
    case Phase::kIdle:
    case Phase::kLinger:
      c->close();
      return;
    case Phase::kHead:
      if (now >= c->head_deadline_ms_) c->refuse(408, "request_timeout", "the request head did not arrive within client.header_timeout");
      else c->arm(c->head_deadline_ms_ - now);
      return;
    case Phase::kBody: {
      const uint64_t quiet = now - c->last_read_ms_;
      if (quiet >= limits_.body_timeout_ms) c->refuse(408, "request_timeout", "no request body bytes for client.body_timeout");
      else c->arm(limits_.body_timeout_ms - quiet);
      return;
    }
    case Phase::kBusy:
      return;
  }
}

void AdminConn::on_read(uv_stream_t* s, ssize_t n) {
  auto* c = static_cast<AdminConn*>(s->data);
  if (c->closing_) return;
  if (n < 0) {
    c->close();
    return;
  }
  if (c->lingering_) return;  // discarded (TcpConn::discard)
  c->last_read_ms_ = uv_now(s->loop);
  net::ReadBuffer& rb = c->sock_.rbuf;
  if (c->streaming_) {  // a stream's reader has nothing more to say: dropped unread
    rb.start = rb.end;
    c->sock_.release_if_empty();
    return;
  }
  c->in_.append(rb.data + rb.start, rb.pending());
  rb.start = rb.end;
  c->sock_.release_if_empty();  // requests are whole in in_: no buffer held between reads
  if (c->in_.size() > kMaxBody + kMaxHead && !c->busy_) {
    c->close();
    return;
  }
  if (!c->busy_) c->parse();
}

void AdminConn::parse() {
  while (!busy_ && !closing_ && !in_.empty()) {
    const http::Fed fed = parser_.feed(in_.data(), in_.size());
    const size_t used = fed.used;
    if (fed.kind == http::Fed::Kind::kError || fed.kind == http::Fed::Kind::kUpgrade) {  // no upgrades here
      if (error_ == 413) refuse(413, "body_too_large", "request body over 1 MiB");
      else refuse(400, "bad_request", "malformed HTTP request");
      return;
    }
    in_.erase(0, used);
    if (busy_) {
      handler_->handle(this, req_);  // may respond() synchronously
      return;
    }
  }
}

void AdminConn::respond(const AdminResponse& r) {
  if (closing_) return;
  // One answer per request: a handler that answered twice would write over an answer in flight.
  SY_ASSERT(busy_ && !answered_);
  answered_ = true;
  out_.clear();
  out_ += "HTTP/1.1 " + std::to_string(r.status) + " " + http::status_reason(r.status) + "\r\n";
  out_ += "Content-Type: " + r.content_type + "\r\n";
  for (const auto& [k, v] : r.headers) out_ += k + ": " + v + "\r\n";
  out_ += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  if (!keep_alive_) out_ += "Connection: close\r\n";
  out_ += "\r\n";
  if (req_.method != "HEAD") out_ += r.body;
  uv_buf_t b = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
  wreq_.data = this;
  if (sock_.write(&wreq_, &b, 1, on_write) != 0) close();
}

void AdminConn::stream_begin(const AdminResponse& r) {
  if (closing_) return;
  SY_ASSERT(busy_ && !answered_);
  answered_ = true;
  streaming_ = true;
  keep_alive_ = false;
  std::string head = "HTTP/1.1 " + std::to_string(r.status) + " " + http::status_reason(r.status) + "\r\n";
  head += "Content-Type: " + r.content_type + "\r\n";
  for (const auto& [k, v] : r.headers) head += k + ": " + v + "\r\n";
  head += "Connection: close\r\n\r\n";
  if (req_.method != "HEAD") head += r.body;
  in_.clear();
  stream_send(std::make_shared<const std::string>(std::move(head)), SIZE_MAX);
  if (req_.method == "HEAD") queue_.push_back(nullptr);  // a marker: close once the head is out
}

bool AdminConn::stream_send(std::shared_ptr<const std::string> frame, size_t max_behind) {
  if (closing_ || !streaming_) return false;
  if (queued_bytes_ > max_behind) return false;
  queued_bytes_ += frame->size();
  queue_.push_back(std::move(frame));
  stream_flush();
  return true;
}

void AdminConn::stream_flush() {
  if (in_flight_ > 0 || queue_.empty() || closing_) return;
  if (!queue_.front()) {  // the HEAD marker
    close();
    return;
  }
  size_t n = 0;
  while (n < kBatch && n < queue_.size() && queue_[n]) {
    bufs_[n] = uv_buf_init(const_cast<char*>(queue_[n]->data()), static_cast<unsigned>(queue_[n]->size()));
    ++n;
  }
  in_flight_ = n;
  wreq_.data = this;
  if (sock_.write(&wreq_, bufs_, static_cast<unsigned>(n), on_stream_write) != 0) close();
}

void AdminConn::on_stream_write(uv_write_t* w, int status) {
  auto* c = static_cast<AdminConn*>(w->data);
  if (c->closing_) return;
  if (status < 0) {
    c->close();
    return;
  }
  for (; c->in_flight_ > 0; --c->in_flight_) {
    c->queued_bytes_ -= c->queue_.front()->size();
    c->queue_.pop_front();
  }
  c->stream_flush();
}

void AdminConn::on_write(uv_write_t* w, int status) {
  auto* c = static_cast<AdminConn*>(w->data);
  if (c->closing_) return;
  if (status < 0) {
    c->close();
    return;
  }
  if (!c->keep_alive_) {
    // Lingering close: FIN first and discard what the client still sends, so it reads our
    // answer instead of a reset; close on its EOF or after a second.
    c->lingering_ = true;
    c->sock_.discard();
    c->in_.clear();
    if (!c->sock_.shutdown_write([](void* owner, int st) {
          if (st < 0) static_cast<AdminConn*>(owner)->close();
        })) {
      c->close();
      return;
    }
    c->phase_ = Phase::kLinger;
    c->arm(kLingerMs);
    return;
  }
  c->busy_ = false;
  c->answered_ = false;
  c->req_ = AdminRequest{};
  c->url_.clear();
  c->phase_ = Phase::kIdle;
  c->arm(limits_.idle_timeout_ms);
  c->parse();
}

void AdminConn::close() {
  if (closing_) return;
  closing_ = true;
  --count_;
  if (prev_) prev_->next_ = next_;
  else live_ = next_;
  if (next_) next_->prev_ = prev_;
  prev_ = next_ = nullptr;
  if (busy_ && handler_) handler_->forget(this);
  sock_.close(on_gone);
}

void AdminConn::on_gone(void* owner) {
  auto* c = static_cast<AdminConn*>(owner);
  SY_ASSERT(c->closing_);
  delete c;
}

const llhttp_settings_t* AdminConn::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t x;
    llhttp_settings_init(&x);
    x.on_message_begin = [](llhttp_t* p) {
      auto* c = static_cast<AdminConn*>(p->data);
      c->req_ = AdminRequest{};
      c->url_.clear();
      c->field_.clear();
      c->value_.clear();
      c->in_value_ = false;
      c->error_ = 0;
      c->phase_ = Phase::kHead;
      c->head_deadline_ms_ = uv_now(c->sock_.tcp.loop) + limits_.header_timeout_ms;
      c->arm(limits_.header_timeout_ms);
      return 0;
    };
    x.on_url = [](llhttp_t* p, const char* at, size_t n) {
      auto* c = static_cast<AdminConn*>(p->data);
      c->url_.append(at, n);
      return c->url_.size() > kMaxHead ? -1 : 0;
    };
    x.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
      auto* c = static_cast<AdminConn*>(p->data);
      if (c->in_value_) {
        http::ascii_lower_in_place(c->field_);
        c->req_.headers.emplace_back(std::move(c->field_), std::move(c->value_));
        c->field_.clear();
        c->value_.clear();
        c->in_value_ = false;
      }
      c->field_.append(at, n);
      return c->req_.headers.size() > 100 ? -1 : 0;
    };
    x.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
      auto* c = static_cast<AdminConn*>(p->data);
      c->in_value_ = true;
      c->value_.append(at, n);
      return 0;
    };
    x.on_headers_complete = [](llhttp_t* p) {
      auto* c = static_cast<AdminConn*>(p->data);
      if (c->in_value_ || !c->field_.empty()) {
        http::ascii_lower_in_place(c->field_);
        c->req_.headers.emplace_back(std::move(c->field_), std::move(c->value_));
      }
      c->req_.method = llhttp_method_name(static_cast<llhttp_method_t>(p->method));
      c->req_.peer_ip = c->peer_ip_;
      size_t q = c->url_.find('?');
      c->req_.path = c->url_.substr(0, q);
      c->req_.parse_query(q == std::string::npos ? std::string_view() : std::string_view(c->url_).substr(q + 1));
      if ((p->flags & F_CONTENT_LENGTH) && p->content_length > kMaxBody) {
        c->error_ = 413;
        return -1;
      }
      if ((p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0)) {
        c->phase_ = Phase::kBody;
        c->last_read_ms_ = uv_now(c->sock_.tcp.loop);
        c->arm(limits_.body_timeout_ms);
      }
      return 0;
    };
    x.on_body = [](llhttp_t* p, const char* at, size_t n) {
      auto* c = static_cast<AdminConn*>(p->data);
      c->req_.body.append(at, n);
      if (c->req_.body.size() > kMaxBody) {
        c->error_ = 413;
        return -1;
      }
      return 0;
    };
    x.on_message_complete = [](llhttp_t* p) {
      auto* c = static_cast<AdminConn*>(p->data);
      c->keep_alive_ = llhttp_should_keep_alive(p);
      c->busy_ = true;
      c->phase_ = Phase::kBusy;
      uv_timer_stop(&c->sock_.timer);
      return static_cast<int>(HPE_PAUSED);
    };
    return x;
  }();
  return &s;
}

}  // namespace sy::admin

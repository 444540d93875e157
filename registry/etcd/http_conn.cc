// HttpConn: the etcd gateway's HTTP/1.1 client connection.
#include "registry/etcd/http_conn.h"

#include <memory>
#include <utility>


namespace sy::registry::etcd {

namespace {
constexpr uint64_t kTimerTickMs = 100;  // deadlines are checked this often
}

HttpConn::HttpConn(uv_loop_t* loop, const conf::Address& to, uint64_t timeout_ms, Broken on_broken)
    : loop_(loop), to_(to), timeout_ms_(timeout_ms), on_broken_(std::move(on_broken)) {
  llhttp_settings_init(&settings_);
  settings_.on_headers_complete = on_headers_complete;
  settings_.on_body = on_body;
  settings_.on_message_complete = on_message_complete;
  parser_.init(HTTP_RESPONSE, &settings_, this);
}

HttpConn* HttpConn::open(uv_loop_t* loop, const conf::Address& to, uint64_t timeout_ms, Broken on_broken,
                         std::shared_ptr<const net::TlsClientConfig> tls) {
  auto* c = new HttpConn(loop, to, timeout_ms, std::move(on_broken));
  c->tls_ = std::move(tls);
  c->sock_.init(loop, c, net::thread_buffers());
  c->connect_req_.data = c;
  uv_tcp_nodelay(&c->sock_.tcp, 1);
  const int rc = uv_tcp_connect(&c->connect_req_, &c->sock_.tcp, to.sa(), on_connect);
  if (rc < 0) {
    // Reported from the loop, not from inside open(): callers never see a callback re-enter them.
    c->broken_ = true;
    c->unsent_ = std::string("connect to ") + to.text + ": " + uv_strerror(rc);
    uv_timer_start(&c->sock_.timer, on_timer, 0, 0);
  }
  return c;
}

void HttpConn::post(std::string_view path, std::string body, Done done) {
  Call c;
  c.done = std::move(done);
  enqueue(path, std::move(body), std::move(c));
}

void HttpConn::stream(std::string_view path, std::string body, Line line, Done end, std::string_view headers) {
  Call c;
  c.done = std::move(end);
  c.line = std::move(line);
  enqueue(path, std::move(body), std::move(c), headers);
}

void HttpConn::enqueue(std::string_view path, std::string body, Call call, std::string_view headers) {
  if (broken_ || closing_) {
    // The caller learns from the loop, as for any other failure.
    if (call.done) call.done(0, {}, "connection to " + to_.text + " is broken");
    return;
  }
  call.deadline_ms = uv_now(loop_) + timeout_ms_;
  calls_.push_back(std::move(call));
  std::string req;
  req.reserve(body.size() + 160);
  req.append("POST ").append(path).append(" HTTP/1.1\r\nHost: ").append(to_.text);
  req.append("\r\nContent-Type: application/json\r\nContent-Length: ").append(std::to_string(body.size()));
  req.append("\r\n").append(headers).append("\r\n").append(body);
  if (!connected_) unsent_.append(req);
  else write(std::move(req));
  arm_timer();
}

void HttpConn::arm_timer() {
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&sock_.timer))) uv_timer_start(&sock_.timer, on_timer, kTimerTickMs, kTimerTickMs);
}

void HttpConn::write(std::string bytes) {
  if (!sock_.send(bytes)) fail("write to " + to_.text + ": the connection refused the bytes");
}

void HttpConn::on_connect(uv_connect_t* req, int status) {
  auto* c = static_cast<HttpConn*>(req->data);
  if (c->closing_) return;
  if (status < 0) {
    c->fail(std::string("connect to ") + c->to_.text + ": " + uv_strerror(status));
    return;
  }
  if (c->tls_) {
    // etcd's certificate is checked against server_name, else the endpoint's IP (etcd's
    // certificates carry their IPs as SANs, as its docs make them).
    const std::string name = c->tls_->server_name.empty() ? c->to_.host() : c->tls_->server_name;
    auto session = net::TlsSession::client(c->tls_->ctx.get(), name, c->tls_->verify);
    if (!session) {
      c->fail("TLS to etcd " + c->to_.text + ": " + net::openssl_reason());
      return;
    }
    c->sock_.start_tls(std::move(session), c->tls_, [](void* owner, bool ok) {
      auto* h = static_cast<HttpConn*>(owner);
      if (h->closing_ || h->broken_) return;
      if (!ok) {
        h->fail("TLS to etcd " + h->to_.text + " failed: " + h->sock_.tls()->error());
        return;
      }
      h->connected_ = true;
      if (!h->unsent_.empty()) h->write(std::exchange(h->unsent_, {}));
    });
    c->sock_.read_start(on_read);
    return;
  }
  c->connected_ = true;
  c->sock_.read_start(on_read);
  if (!c->unsent_.empty()) c->write(std::exchange(c->unsent_, {}));
}

void HttpConn::on_read(uv_stream_t* s, ssize_t n) {
  auto* c = static_cast<HttpConn*>(s->data);
  if (c->closing_ || c->broken_) return;
  if (n < 0) {
    c->fail(n == UV_EOF ? "etcd " + c->to_.text + " closed the connection" : std::string("read from ") + c->to_.text + ": " + uv_strerror(static_cast<int>(n)));
    return;
  }
  net::ReadBuffer& rb = c->sock_.rbuf;
  const http::Fed fed = c->parser_.feed(rb.data + rb.start, rb.pending());
  if (c->closing_ || c->broken_) return;  // (the buffer goes back with the close)
  if (fed.kind == http::Fed::Kind::kError) {
    c->fail("malformed response from etcd " + c->to_.text + ": " + c->parser_.reason());
    return;
  }
  rb.start = rb.end;  // the parser keeps what it needs (body_, the partial line)
  c->sock_.release_if_empty();
}

int HttpConn::on_headers_complete(llhttp_t* p) {
  auto* c = static_cast<HttpConn*>(p->data);
  c->status_ = p->status_code;
  c->body_.clear();
  if (!c->calls_.empty()) c->calls_.front().head_seen = true;
  return 0;
}

int HttpConn::on_body(llhttp_t* p, const char* at, size_t n) {
  auto* c = static_cast<HttpConn*>(p->data);
  if (c->calls_.empty()) return -1;  // an answer nobody asked for
  Call& call = c->calls_.front();
  if (!call.line || c->status_ != 200) {
    c->body_.append(at, n);
    return 0;
  }
  // Streaming: each message ends with a newline; a message may span reads.
  std::string_view data(at, n);
  while (!data.empty()) {
    const size_t nl = data.find('\n');
    if (nl == std::string_view::npos) {
      c->body_.append(data);
      break;
    }
    if (c->body_.empty()) {
      call.line(data.substr(0, nl));
    } else {
      c->body_.append(data.substr(0, nl));
      std::string whole = std::exchange(c->body_, {});
      call.line(whole);
    }
    if (c->closing_ || c->broken_) return -1;  // the line handler closed us
    data.remove_prefix(nl + 1);
  }
  return 0;
}

int HttpConn::on_message_complete(llhttp_t* p) {
  auto* c = static_cast<HttpConn*>(p->data);
  if (c->calls_.empty()) return -1;
  Call call = std::move(c->calls_.front());
  c->calls_.pop_front();
  std::string body = std::exchange(c->body_, {});
  if (call.line && c->status_ == 200 && !body.empty()) {
    call.line(body);  // a last message without its newline
    body.clear();
  }
  if (c->calls_.empty()) uv_timer_stop(&c->sock_.timer);
  if (call.done) call.done(c->status_, std::move(body), "");
  return (c->closing_ || c->broken_) ? -1 : 0;
}

void HttpConn::on_timer(uv_timer_t* t) {
  auto* c = static_cast<HttpConn*>(t->data);
  if (c->closing_) return;
  if (c->broken_) {  // open() could not start the connect
    c->broken_ = false;
    c->fail(std::exchange(c->unsent_, {}));
    return;
  }
  if (c->calls_.empty()) {
    uv_timer_stop(t);
    return;
  }
  const Call& front = c->calls_.front();
  if (front.line && front.head_seen) return;  // an open stream has no deadline
  if (uv_now(c->loop_) >= front.deadline_ms)
    c->fail("etcd " + c->to_.text + " did not answer within " + std::to_string(c->timeout_ms_) + " ms");
}

void HttpConn::fail(const std::string& why) {
  if (broken_ || closing_) return;
  broken_ = true;
  uv_timer_stop(&sock_.timer);
  sock_.read_stop();
  auto calls = std::move(calls_);
  calls_.clear();
  for (auto& call : calls)
    if (call.done) call.done(0, {}, why);
  if (on_broken_) on_broken_(this);
}

void HttpConn::close(bool quiet) {
  if (closing_) return;
  if (!quiet && !broken_) {
    auto calls = std::move(calls_);
    calls_.clear();
    for (auto& call : calls)
      if (call.done) call.done(0, {}, "closed");
  }
  calls_.clear();
  closing_ = true;
  sock_.close(on_gone);
}

void HttpConn::on_gone(void* owner) { delete static_cast<HttpConn*>(owner); }

}  // namespace sy::registry::etcd

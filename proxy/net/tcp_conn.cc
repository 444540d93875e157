// TcpConn's TLS layer: ciphertext read into a buffer of its own, decrypted into the owner's read
// buffer; plaintext the owner sends encrypted on the way out. The owner's callbacks see exactly
// what a plain connection gives them: bytes added to rbuf, UV_EOF at the end (close_notify or
// FIN), an error otherwise (UV_EPROTO: the TLS session failed; TlsSession::error() says why).
//
// Backpressure holds as on a plain socket: while the owner does not want bytes, nothing is
// decrypted and the socket is not read; what OpenSSL or the ciphertext buffer still hold when it
// wants them again is delivered on the next loop turn (the layer's own zero-delay timer), since
// no socket event will announce it.
#include "proxy/net/tcp_conn.h"

#include <algorithm>
#include <string>

#include "proxy/net/tls_session.h"

namespace sy::net {

namespace {

// What a client that spoke plain HTTP to a TLS port reads (nginx answers 400 too, not a hang).
constexpr std::string_view kPlainHttpAnswer =
    "HTTP/1.1 400 Bad Request\r\n"
    "Content-Type: text/plain\r\n"
    "Connection: close\r\n"
    "Content-Length: 66\r\n"
    "\r\n"
    "This port speaks TLS (HTTPS): the request was sent in plain HTTP.\n";

// A write of the layer's own (handshake records, alerts, session tickets) that did not go at
// once: rare, so allocated per write.
struct ControlWrite {
  uv_write_t req{};
  std::string bytes;
};

}  // namespace

struct TlsLayer {
  TcpConn* conn = nullptr;
  std::unique_ptr<TlsSession> session;
  std::shared_ptr<const void> keep;
  TcpConn::TlsEvent event = nullptr;
  ReadBuffer cipher;      // ciphertext read, not yet taken by OpenSSL
  std::string batch_out;  // ciphertext of the OutBatch write in flight (uv_write refers into it)
  std::string gather;     // small plaintext segments joined into one record
  bool batch_busy = false;
  uv_write_cb batch_cb = nullptr;
  void* batch_data = nullptr;
  uv_timer_t drain{};     // delivers what the session holds once the owner wants bytes again
  ssize_t end = 0;        // an EOF or error that came while plaintext was still held
  bool reported = false;  // the handshake event was sent

  void release_cipher(BufferPool& pool) {
    if (cipher.data && cipher.pending() == 0) {
      pool.release(cipher.data);
      cipher = {};
    }
  }
};

void TcpConn::start_tls(std::unique_ptr<TlsSession> session, std::shared_ptr<const void> keep, TlsEvent ev) {
  SY_ASSERT(!tls_ && pending_ == 0);
  tls_ = new TlsLayer;
  tls_->conn = this;
  tls_->session = std::move(session);
  tls_->keep = std::move(keep);
  tls_->event = ev;
  uv_timer_init(tcp.loop, &tls_->drain);
  tls_->drain.data = tls_;
  tls_send_output();  // a client's ClientHello
}

TlsSession* TcpConn::tls() const { return tls_ ? tls_->session.get() : nullptr; }

int TcpConn::write(uv_write_t* req, const uv_buf_t* bufs, unsigned n, uv_write_cb cb) {
  if (!tls_) return uv_write(req, stream(), bufs, n, cb);
  TlsLayer& L = *tls_;
  SY_ASSERT(!L.batch_busy);
  for (unsigned i = 0; i < n; ++i)
    if (L.session->write({bufs[i].base, bufs[i].len}) == TlsSession::Status::kError) return UV_EPROTO;
  L.batch_out.swap(L.session->output());  // the last batch's storage becomes the session's: no allocation
  L.session->output().clear();
  L.batch_cb = cb;
  L.batch_data = req->data;
  req->data = &L;
  uv_buf_t b = uv_buf_init(L.batch_out.data(), static_cast<unsigned>(L.batch_out.size()));
  const int rc = uv_write(req, stream(), &b, 1, [](uv_write_t* r, int status) {
    auto* layer = static_cast<TlsLayer*>(r->data);
    layer->batch_busy = false;
    r->data = layer->batch_data;
    layer->batch_cb(r, status);
  });
  if (rc < 0) {
    req->data = L.batch_data;
    return rc;
  }
  L.batch_busy = true;
  return 0;
}

bool TcpConn::send(std::string_view bytes) {
  if (tls_) {
    if (tls_->session->write(bytes) == TlsSession::Status::kError) return false;
    return tls_send_output();
  }
  auto* w = new ControlWrite;
  w->bytes.assign(bytes);
  w->req.data = w;
  uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  if (uv_write(&w->req, stream(), &b, 1, [](uv_write_t* r, int) { delete static_cast<ControlWrite*>(r->data); }) < 0) {
    delete w;
    return false;
  }
  return true;
}

void TcpConn::write_raw(std::string_view bytes) {
  uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
  uv_try_write(stream(), &b, 1);
}

// Sends what the session has for the socket. false: the socket refused (the owner hears of it
// through its next read or write).
bool TcpConn::tls_send_output() {
  std::string& out = tls_->session->output();
  if (out.empty()) return true;
  uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
  const int n = uv_try_write(stream(), &b, 1);
  if (n >= 0 && static_cast<size_t>(n) == out.size()) {
    out.clear();
    return true;
  }
  if (n < 0 && n != UV_EAGAIN) {
    out.clear();
    return false;
  }
  auto* w = new ControlWrite;
  w->bytes.assign(out, n > 0 ? static_cast<size_t>(n) : 0);
  out.clear();
  w->req.data = w;
  b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  const int rc = uv_write(&w->req, stream(), &b, 1, [](uv_write_t* r, int) { delete static_cast<ControlWrite*>(r->data); });
  if (rc < 0) {
    delete w;
    return false;
  }
  return true;
}

int TcpConn::tls_flush(const uv_buf_t* bufs, size_t n, uv_write_t* req, uv_write_cb cb, void* data) {
  TlsLayer& L = *tls_;
  SY_ASSERT(!L.batch_busy);  // one OutBatch per connection, one flush at a time
  TlsSession& s = *L.session;
  // Small segments (a head, chunk framing) are joined so one record carries them; a large one
  // goes as it is (OpenSSL splits it into records itself).
  constexpr size_t kJoin = 4096;
  for (size_t i = 0; i < n; ++i) {
    if (bufs[i].len < kJoin && L.gather.size() + bufs[i].len <= 16384) {
      L.gather.append(bufs[i].base, bufs[i].len);
      continue;
    }
    if (!L.gather.empty()) {
      if (s.write(L.gather) == TlsSession::Status::kError) return UV_EPROTO;
      L.gather.clear();
    }
    if (s.write({bufs[i].base, bufs[i].len}) == TlsSession::Status::kError) return UV_EPROTO;
  }
  if (!L.gather.empty()) {
    if (s.write(L.gather) == TlsSession::Status::kError) return UV_EPROTO;
    L.gather.clear();
  }
  std::string& out = s.output();
  if (out.empty()) return 0;  // (before the handshake ends the session queues it)
  uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
  const int w = uv_try_write(stream(), &b, 1);
  if (w >= 0 && static_cast<size_t>(w) == out.size()) {
    out.clear();
    return 0;
  }
  if (w < 0 && w != UV_EAGAIN) {
    out.clear();
    return w;
  }
  L.batch_out.assign(out, w > 0 ? static_cast<size_t>(w) : 0);
  out.clear();
  L.batch_cb = cb;
  L.batch_data = data;
  req->data = &L;
  b = uv_buf_init(L.batch_out.data(), static_cast<unsigned>(L.batch_out.size()));
  const int rc = uv_write(req, stream(), &b, 1, [](uv_write_t* r, int status) {
    auto* layer = static_cast<TlsLayer*>(r->data);
    layer->batch_busy = false;
    r->data = layer->batch_data;  // the owner's callback finds its own data, as on a plain socket
    layer->batch_cb(r, status);
  });
  if (rc < 0) return rc;
  L.batch_busy = true;
  return 1;  // OutBatch::kPending
}

void TcpConn::tls_alloc(uv_buf_t* buf) {
  ReadBuffer& c = tls_->cipher;
  if (!wanted_) {
    *buf = uv_buf_init(nullptr, 0);  // a lazy stop meeting bytes (read_cb stops reading)
    return;
  }
  if (!c.data && !(c.data = buffers_->acquire())) {
    *buf = uv_buf_init(nullptr, 0);
    return;
  }
  c.compact();
  *buf = uv_buf_init(c.data + c.end, static_cast<unsigned>(c.space()));
}

void TcpConn::tls_read(ssize_t n) {
  if (n > 0) {
    tls_->cipher.end += static_cast<size_t>(n);
    tls_pump();
    return;
  }
  if (n == UV_ENOBUFS && (!wanted_ || (tls_->cipher.data && tls_->cipher.space() == 0))) {
    read_stop();  // the owner is not taking plaintext: ciphertext waits in the kernel
    return;
  }
  if (tls_->cipher.pending() > 0 || tls_->session->has_pending()) {
    tls_->end = n;  // after what is still held
    read_stop();
    tls_pump();
    return;
  }
  on_read_(stream(), n);
}

bool TcpConn::tls_read_now(OnRead cb) {
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp), &fd) != 0) return false;
  ReadBuffer& c = tls_->cipher;
  if (!c.data && !(c.data = buffers_->acquire())) return false;
  c.compact();
  ssize_t n;
  do {
    n = ::recv(fd, c.data + c.end, c.space(), 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    tls_->release_cipher(*buffers_);
    return false;
  }
  on_read_ = cb;
  wanted_ = true;
  c.end += static_cast<size_t>(n);
  tls_pump();
  return true;
}

void TcpConn::tls_pump() {
  TlsLayer& L = *tls_;
  TlsSession& s = *L.session;
  while (pending_ == 0 && wanted_) {
    if (!take_buffer()) {
      on_read_(stream(), UV_ENOBUFS);
      return;
    }
    size_t used = 0, got = 0;
    const TlsSession::Status st =
        s.decrypt(L.cipher.data ? L.cipher.data + L.cipher.start : nullptr, L.cipher.pending(), used,
                  rbuf.data + rbuf.end, rbuf.space(), got);
    L.cipher.start += used;
    L.release_cipher(*buffers_);
    tls_send_output();  // handshake records, tickets, alerts
    if (!L.reported && (s.handshake_done() || st == TlsSession::Status::kError)) {
      L.reported = true;
      if (L.event) L.event(owner_, st != TlsSession::Status::kError);
      if (pending_ > 0) return;
    }
    if (got > 0) {
      rbuf.end += got;
      on_read_(stream(), static_cast<ssize_t>(got));
      continue;  // the owner may have taken it all and want more
    }
    if (rbuf.pending() == 0) drop_buffer();
    if (st == TlsSession::Status::kError) {
      if (s.plain_http()) write_raw(kPlainHttpAnswer);
      on_read_(stream(), UV_EPROTO);
      return;
    }
    if (st == TlsSession::Status::kClosed) {
      on_read_(stream(), UV_EOF);
      return;
    }
    if (rbuf.data && rbuf.space() == 0 && (L.cipher.pending() > 0 || s.has_pending())) {
      on_read_(stream(), UV_ENOBUFS);  // as a plain socket with a full buffer
      return;
    }
    if (L.end != 0 && L.cipher.pending() == 0 && !s.has_pending()) {
      const ssize_t e = L.end;
      L.end = 0;
      on_read_(stream(), e);
    }
    return;
  }
}

void TcpConn::tls_resume() {
  TlsLayer& L = *tls_;
  if (pending_ > 0) return;
  if (L.cipher.pending() == 0 && !L.session->has_pending() && L.end == 0) return;
  uv_timer_start(&L.drain, [](uv_timer_t* t) {
    TcpConn* c = static_cast<TlsLayer*>(t->data)->conn;
    if (c->pending_ == 0 && c->wanted_) c->tls_pump();
  }, 0, 0);
}

void TcpConn::tls_trim(size_t keep) {
  tls_->session->trim(keep);
  tls_->release_cipher(*buffers_);
  if (!tls_->batch_busy && tls_->batch_out.capacity() > keep) std::string().swap(tls_->batch_out);
  if (tls_->gather.capacity() > keep) std::string().swap(tls_->gather);
}

void TcpConn::tls_close_notify() {
  TlsSession& s = *tls_->session;
  if (!s.handshake_done() || s.failed()) return;
  s.close_notify();
  tls_send_output();
}

void TcpConn::tls_close() {
  tls_close_notify();
  ++pending_;
  uv_close(reinterpret_cast<uv_handle_t*>(&tls_->drain),
           [](uv_handle_t* h) { static_cast<TlsLayer*>(h->data)->conn->closed_one(); });
}

void TcpConn::tls_free() {
  if (tls_->cipher.data) buffers_->release(tls_->cipher.data);
  delete tls_;
  tls_ = nullptr;
}

}  // namespace sy::net

// HTTP/2 from clients: the codec of one connection (H2Session, an nghttp2 server session) and its
// streams (H2Stream), each an exchange — a ProxyStream behind the ClientSide interface, so routing,
// limits, attempts, retries, relaying, error answers and the access log are the HTTP/1.1 path's
// own. The upstream side stays HTTP/1.1: a stream's request goes up as a request line + Host built
// from :method, :path and :authority, its body chunked unless it had a content-length (RFC 9113
// §8.2.2 and §8.3.1; the library has refused connection-specific headers, a `te` other than
// "trailers", uppercase names, CR/LF/NUL in values, pseudo-headers out of place and a
// content-length the DATA disagrees with before we see the request).
//
// The connection (DownstreamConn) owns the socket, TLS and closing; it hands its input here once
// ALPN said h2 or the first bytes are the HTTP/2 preface. Memory is bounded by the windows: the
// library's automatic WINDOW_UPDATE is off, and a stream's received DATA is given back
// (nghttp2_session_consume) only once written upstream, so a fast upload to a slow backend is
// paced by the client's window; a response's bytes are copied into the stream (one upstream read
// at a time: the upstream is not read again until they went into frames), so a slow reader holds
// at most its stream window and that one read. Floods (PING, SETTINGS, PRIORITY, RST_STREAM, empty
// DATA) spend one token bucket per connection; past it, GOAWAY and close.
//
// Threading: its worker's loop only.
#pragma once

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

#include "proxy/net/end_of_turn.h"
#include "proxy/net/out_batch.h"
#include "proxy/server/client_side.h"
#include "proxy/server/h2_memory.h"
#include "proxy/server/proxy_stream.h"
#include "proxy/server/worker.h"

namespace sy::server {

class DownstreamConn;
class H2Session;

// One stream: one exchange. Freed when the library has closed the stream and its timer is closed.
class H2Stream final : public ClientSide {
 public:
  H2Stream(H2Session& h, int32_t id);

  // ClientSide
  void start_reading() override;
  void stop_reading() override {}  // flow control: bytes not given back are the pause
  void process_input() override;
  bool keep_alive() const override { return true; }  // (the stream ends; the connection stays)
  net::ReadBuffer* h1_input() override { return nullptr; }
  void out_interim(const http::MessageHead& head, http::ResponseForward& f) override;
  void out_head(const http::MessageHead& head, http::ResponseForward& f) override;
  void out_body(const char* p, size_t n) override;
  void out_trailers(const http::MessageHead& head, size_t first) override;
  void out_end() override;
  bool out_error(int status, std::string_view code, std::string_view message, std::string_view extra,
                 int grpc_status) override;
  bool out_begun() const override { return submitted_; }
  int flush_client() override;
  void finish_exchange() override;
  void close() override;
  void arm(int64_t ms) override;
  using ClientSide::arm;
  const net::TlsSession* tls() const override;
  std::string_view protocol() const override { return "HTTP/2.0"; }

 private:
  friend class H2Session;
  ~H2Stream() = default;

  // ---- from the session's callbacks ----
  bool on_header(std::string_view name, std::string_view value);  // false: reset the stream
  void on_trailer(std::string_view name, std::string_view value);  // the request's trailer section
  void on_head_complete(bool end_stream);
  void on_data(const uint8_t* p, size_t n);
  void on_request_end();
  void on_written();       // every response byte queued went into frames
  void detach(const char* why);  // the library closed the stream (or the connection is going)

  void submit(const std::vector<nghttp2_nv>& nva);
  void body_up(const char* p, size_t n);
  static void on_timer(uv_timer_t* t);
  static void on_timer_closed(uv_handle_t* h);

  H2Session* h_;  // nullptr once detached
  int32_t id_;
  ProxyStream ps_;
  uv_timer_t timer_;
  std::string body_;      // request DATA that came before an upstream took the head
  std::string down_;      // response bytes waiting to go into DATA frames
  size_t down_off_ = 0;
  size_t unconsumed_ = 0;  // DATA received and not yet given back to the client's window
  size_t header_bytes_ = 0;
  std::string authority_;
  std::string cookie_;     // cookie crumbs joined with "; " (RFC 9113 §8.2.3)
  std::string req_trailers_;  // the request's trailer fields as lines, for the last chunk up
  std::vector<std::string> trailers_;  // the response's trailer fields: name, value, name, …
  bool submitted_ = false;  // response HEADERS handed to the library
  bool no_body_ = false;    // HEADERS carry END_STREAM (HEAD, 204, 304)
  bool eof_ = false;        // the last response byte is in down_
  bool deferred_ = false;   // the data source said "nothing yet"
  bool waiting_ = false;    // flush_client said pending: on_written follows
  bool finished_ = false;   // the exchange is over (finish_exchange or close)
  bool head_went_ = false;  // the request head went up once (later heads are retries)
  bool head_error_ = false;
  H2Stream* prev_ = nullptr;
  H2Stream* next_ = nullptr;
};

class H2Session final : net::EndOfTurn::Client {
 public:
  H2Session(Worker& w, DownstreamConn& c);
  ~H2Session();
  H2Session(const H2Session&) = delete;
  H2Session& operator=(const H2Session&) = delete;

  // Server SETTINGS queued; false if the library could not be set up.
  bool start();
  // Plaintext bytes from the client (all of them are taken).
  void on_input(const char* p, size_t n);
  // Frames out to the socket (outside the library's callbacks; otherwise later).
  void send();
  // Frames out at the end of this loop turn (net::EndOfTurn), with whatever else
  // this turn queues on the connection; at_end_of_turn() is that moment.
  void send_soon();
  void at_end_of_turn() override { send(); }
  // Graceful: GOAWAY with the last stream id taken; those streams finish, then the connection
  // closes. `reason` labels switchyard_http2_goaway_total ("shutdown", "reload"); once per session.
  void shutdown(const char* reason);
  // Every stream's exchange ends now, recorded with `why`.
  void close_all(const char* why);
  // The connection is closing (DownstreamConn::close): streams end, nothing more is sent.
  void on_conn_close() {
    closing_ = true;
    close_all("client_closed");
  }
  // The connection timer ran out (idle with no stream, or a GOAWAY the client never read).
  void on_timer();
  size_t active() const { return active_; }
  // No stream open: arm the idle timer (client.idle_timeout; the frame buffer goes back early).
  void idle_check();

 private:
  friend class H2Stream;

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
                       const uint8_t* value, size_t valuelen, uint8_t flags, void* self);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_frame_send(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_data_chunk(nghttp2_session*, uint8_t flags, int32_t id, const uint8_t* data, size_t len, void* self);
  static int on_stream_close(nghttp2_session*, int32_t id, uint32_t error_code, void* self);
  static ssize_t on_read_data(nghttp2_session*, int32_t id, uint8_t* buf, size_t length, uint32_t* flags,
                              nghttp2_data_source* source, void* self);
  static void on_write(uv_write_t* req, int status);

  bool spend_control_token();  // false: a flood; the connection goes
  // GOAWAY `code` now and close once it is out; `reason` labels the metric and the streams' records.
  void terminate(uint32_t code, const char* reason, const char* why);
  void goaway();
  void maybe_close();

  // A connection with no stream for this long gives back its frame buffer (idle_check).
  static constexpr int64_t kQuietMs = 100;

  Worker& w_;
  DownstreamConn& c_;
  H2Memory mem_;  // before s_: the session lives in it
  nghttp2_session* s_ = nullptr;
  net::OutBatch out_;
  std::vector<H2Stream*> written_;  // streams whose bytes all went into frames during this send
  std::vector<H2Stream*> done_;     // send()'s copy of written_ while it calls them back (its
                                    // capacity kept: no allocation per send)
  H2Stream* streams_ = nullptr;     // every live stream (close_all)
  size_t active_ = 0;
  double tokens_ = 0;               // control frames this connection may still send
  uint64_t tokens_at_ms_ = 0;
  bool in_recv_ = false;            // inside nghttp2_session_mem_recv: no send now
  bool dirty_ = false;              // a send was asked for during the receive
  bool sending_ = false;
  bool again_ = false;
  bool terminating_ = false;
  bool draining_ = false;  // shutdown()'s GOAWAY went out
  bool closing_ = false;
  bool quiet_due_ = false;      // the idle timer's first run gives the frame buffer back
  uint64_t idle_since_ms_ = 0;  // the last stream ended (loop time)
};

}  // namespace sy::server

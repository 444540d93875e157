// H2Memory: a real libnghttp2 server session lives in it; the frame buffer's pages go back to the
// kernel while the session is quiet and frames built afterwards still arrive intact.
#include <doctest.h>
#include <nghttp2/nghttp2.h>

#include <string>

#include "proxy/server/h2_memory.h"

using sy::server::H2Memory;

namespace {

struct Peer {
  nghttp2_session* s = nullptr;
  std::string got_value;  // the response's x-big header, client side
  int ping_acks = 0;
  ~Peer() { nghttp2_session_del(s); }
};

std::string drain(nghttp2_session* s) {
  std::string out;
  for (;;) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(s, &data);
    REQUIRE(n >= 0);
    if (n == 0) return out;
    out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
}

void feed(nghttp2_session* s, const std::string& bytes) {
  REQUIRE(nghttp2_session_mem_recv(s, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()) ==
          static_cast<ssize_t>(bytes.size()));
}

nghttp2_nv nv(const char* name, const std::string& value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), std::char_traits<char>::length(name), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

const std::string kBig(10000, 'v');  // a header value of 10,000 bytes: most of the frame buffer

}  // namespace

TEST_CASE("h2 memory: the frame buffer's pages go back while quiet and frames built after are intact") {
  H2Memory mem;
  Peer server, client;
  nghttp2_session_callbacks* cb = nullptr;
  REQUIRE(nghttp2_session_callbacks_new(&cb) == 0);
  // Server: answers each request with a 200 carrying kBig.
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, [](nghttp2_session* s, const nghttp2_frame* f, void*) {
    if (f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      const std::string status = "200";
      nghttp2_nv h[] = {nv(":status", status), nv("x-big", kBig)};
      return nghttp2_submit_response(s, f->hd.stream_id, h, 2, nullptr);
    }
    return 0;
  });
  nghttp2_option* opt = nullptr;
  REQUIRE(nghttp2_option_new(&opt) == 0);
  nghttp2_option_set_no_closed_streams(opt, 1);  // as H2Session: the stream map empties
  mem.building(true);
  REQUIRE(nghttp2_session_server_new3(&server.s, cb, &server, opt, mem.mem()) == 0);
  mem.building(false);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  CHECK(mem.paged_bytes() >= H2Memory::kBig);

  REQUIRE(nghttp2_session_callbacks_new(&cb) == 0);
  nghttp2_session_callbacks_set_on_header_callback(
      cb, [](nghttp2_session*, const nghttp2_frame*, const uint8_t* name, size_t namelen, const uint8_t* value,
             size_t valuelen, uint8_t, void* self) {
        if (std::string(reinterpret_cast<const char*>(name), namelen) == "x-big")
          static_cast<Peer*>(self)->got_value.assign(reinterpret_cast<const char*>(value), valuelen);
        return 0;
      });
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, [](nghttp2_session*, const nghttp2_frame* f, void* self) {
    if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK)) ++static_cast<Peer*>(self)->ping_acks;
    return 0;
  });
  REQUIRE(nghttp2_session_client_new(&client.s, cb, &client) == 0);
  nghttp2_session_callbacks_del(cb);

  // The opening exchange: the server's SETTINGS and a first response are built in the buffer.
  REQUIRE(nghttp2_submit_settings(server.s, NGHTTP2_FLAG_NONE, nullptr, 0) == 0);
  REQUIRE(nghttp2_submit_settings(client.s, NGHTTP2_FLAG_NONE, nullptr, 0) == 0);
  const std::string method = "GET", scheme = "http", authority = "x", path = "/";
  nghttp2_nv req[] = {nv(":method", method), nv(":scheme", scheme), nv(":authority", authority), nv(":path", path)};
  REQUIRE(nghttp2_submit_request(client.s, nullptr, req, 4, nullptr, nullptr) == 1);
  feed(server.s, drain(client.s));
  feed(client.s, drain(server.s));
  CHECK(client.got_value == kBig);
  CHECK(mem.resident_bytes() >= 3 * 4096);  // the 10 KB header block touched its pages

  CHECK(mem.paged_bytes() >= H2Memory::kBig + H2Memory::kZeroed);  // the frame buffer and the stream map
  // Quiet: nothing to send, so the buffer's contents are dead and its pages go back; the stream
  // ended, so the map's table is zeros again and goes back too.
  REQUIRE(nghttp2_session_want_write(server.s) == 0);
  mem.release_idle();
  CHECK(mem.resident_bytes() == 0);
  CHECK(mem.paged_bytes() >= H2Memory::kBig);  // the mapping stays: only its pages went

  // Frames built in the zeroed pages arrive whole: a PING answered, a second 10 KB response.
  client.got_value.clear();
  REQUIRE(nghttp2_submit_ping(client.s, NGHTTP2_FLAG_NONE, nullptr) == 0);
  REQUIRE(nghttp2_submit_request(client.s, nullptr, req, 4, nullptr, nullptr) == 3);
  feed(server.s, drain(client.s));
  feed(client.s, drain(server.s));
  CHECK(client.ping_acks == 1);
  CHECK(client.got_value == kBig);
  CHECK(mem.resident_bytes() > 0);
}

TEST_CASE("h2 memory: big blocks taken after building come from malloc and are never released") {
  H2Memory mem;
  nghttp2_mem* m = mem.mem();
  void* p = m->malloc(64 * 1024, m->mem_user_data);  // a header value being decoded, say
  REQUIRE(p != nullptr);
  std::string(64 * 1024, 'h').copy(static_cast<char*>(p), 64 * 1024);
  CHECK(mem.paged_bytes() == 0);
  mem.release_idle();
  CHECK(static_cast<char*>(p)[0] == 'h');
  CHECK(static_cast<char*>(p)[64 * 1024 - 1] == 'h');
  p = m->realloc(p, 128 * 1024, m->mem_user_data);
  REQUIRE(p != nullptr);
  CHECK(static_cast<char*>(p)[100] == 'h');
  m->free(p, m->mem_user_data);
  CHECK(m->calloc(static_cast<size_t>(-1) / 2, 4, m->mem_user_data) == nullptr);  // nmemb * size overflows
  void* z = m->calloc(100, 10, m->mem_user_data);
  REQUIRE(z != nullptr);
  CHECK(static_cast<unsigned char*>(z)[999] == 0);
  m->free(z, m->mem_user_data);
}

TEST_CASE("h2 memory: a zeroed block's pages go back only while they hold zeros") {
  H2Memory mem;
  nghttp2_mem* m = mem.mem();
  auto* p = static_cast<unsigned char*>(m->calloc(2, 4096, m->mem_user_data));
  REQUIRE(p != nullptr);
  CHECK(mem.paged_bytes() == 8192);
  p[0] = 1;     // the first page in use
  p[4096] = 0;  // the second touched, still zeros
  CHECK(mem.resident_bytes() == 8192);
  mem.release_idle();
  CHECK(mem.resident_bytes() == 4096);
  CHECK(p[0] == 1);
  CHECK(p[4096] == 0);
  m->free(p, m->mem_user_data);
  CHECK(mem.paged_bytes() == 0);
}

TEST_CASE("h2 memory: a paged block grown by realloc keeps its bytes and leaves the pages") {
  H2Memory mem;
  nghttp2_mem* m = mem.mem();
  mem.building(true);
  void* p = m->malloc(H2Memory::kBig + 10, m->mem_user_data);
  mem.building(false);
  REQUIRE(p != nullptr);
  CHECK(mem.paged_bytes() >= H2Memory::kBig + 10);
  static_cast<char*>(p)[H2Memory::kBig] = 'k';
  CHECK(m->realloc(p, H2Memory::kBig + 20, m->mem_user_data) == p);  // fits the pages it has
  void* q = m->realloc(p, 64 * 1024, m->mem_user_data);
  REQUIRE(q != nullptr);
  CHECK(static_cast<char*>(q)[H2Memory::kBig] == 'k');
  CHECK(mem.paged_bytes() == 0);
  m->free(q, m->mem_user_data);
}

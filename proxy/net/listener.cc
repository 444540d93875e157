// Listener: bind, listen, hand connections on.
#include "proxy/net/listener.h"

#include "proxy/net/close.h"

namespace sy::net {

std::string Listener::open(uv_loop_t* loop, const conf::Address& addr, bool reuse_port, OnConnection cb, void* ctx) {
  cb_ = cb;
  ctx_ = ctx;
  uv_tcp_init_ex(loop, &tcp_, addr.ss.ss_family);
  tcp_.data = this;
  open_ = true;
  if (reuse_port) {
    uv_os_fd_t fd;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) == 0) {
      int one = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    }
  }
  int rc = uv_tcp_bind(&tcp_, addr.sa(), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&tcp_), 4096, on_connection);
  if (rc != 0) {
    close();
    return "cannot listen on " + addr.text + ": " + uv_strerror(rc);
  }
  sockaddr_storage ss{};
  int len = sizeof ss;
  uv_tcp_getsockname(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len);
  bound_.ss = ss;
  bound_.text = conf::format_address(reinterpret_cast<sockaddr*>(&ss));
  return "";
}

void Listener::close() {
  if (!open_) return;
  open_ = false;
  close_socket(reinterpret_cast<uv_handle_t*>(&tcp_), nullptr);
}

void Listener::on_connection(uv_stream_t* s, int status) {
  auto* l = static_cast<Listener*>(s->data);
  l->cb_(l->ctx_, s, status);
}

}  // namespace sy::net

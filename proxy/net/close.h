// Closing a socket handle. Same as uv_close, plus, in ThreadSanitizer builds, telling TSan the
// descriptor is gone: Debian's libuv (not built with TSan) closes it with a raw close syscall that
// TSan cannot see, so it would take the next socket or file given the same number on another
// thread for a race with the old one.
#pragma once

#include <uv.h>

#if defined(__SANITIZE_THREAD__)
extern "C" void __sanitizer_syscall_pre_impl_close(long fd);
#endif

namespace sy::net {

inline void close_socket(uv_handle_t* h, uv_close_cb cb) {
#if defined(__SANITIZE_THREAD__)
  uv_os_fd_t fd;
  if (uv_fileno(h, &fd) == 0) __sanitizer_syscall_pre_impl_close(fd);
#endif
  uv_close(h, cb);
}

}  // namespace sy::net

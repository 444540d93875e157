// Closing a socket handle. Same as uv_close, plus, in ThreadSanitizer builds, telling TSan the
// descriptor is gone: Debian's libuv (not built with TSan) closes it with a raw close syscall that
// TSan cannot see, so it would take the next socket or file given the same number on another
// thread for a race with the old one. (The call comes just after the close; tests/tsan.supp
// covers a number reused within that instant.)
#pragma once

#include <uv.h>

#if defined(__SANITIZE_THREAD__)
extern "C" void __sanitizer_syscall_pre_impl_close(long fd);
#endif

namespace sy::net {

inline void close_socket(uv_handle_t* h, uv_close_cb cb) {
#if defined(__SANITIZE_THREAD__)
  // Before uv_close, and again after it: uv_close first takes the descriptor out of epoll (an
  // access TSan sees and must not remember) and then closes it.
  uv_os_fd_t fd;
  const bool has_fd = uv_fileno(h, &fd) == 0;
  if (has_fd) __sanitizer_syscall_pre_impl_close(fd);
  uv_close(h, cb);
  if (has_fd) __sanitizer_syscall_pre_impl_close(fd);
#else
  uv_close(h, cb);
#endif
}

}  // namespace sy::net

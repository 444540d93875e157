// Gathers what one side will write next: bytes referenced in place (a read buffer that stays
// untouched until the write completes) and bytes the batch copies into its own scratch (heads,
// chunk framing). flush() sends everything with uv_try_write and queues only the rest with
// uv_write, so a small response costs one syscall and no write request.
#pragma once

#include <uv.h>

#include <string>
#include <string_view>
#include <vector>

#include "proxy/net/tcp_conn.h"

namespace sy::net {

class OutBatch {
 public:
  OutBatch() = default;

  // `p` must stay valid until the flush completes.
  void ref(const char* p, size_t n) {
    if (n) segs_.push_back({p, 0, n});
  }
  void copy(std::string_view s) {
    if (s.empty()) return;
    segs_.push_back({nullptr, scratch_.size(), s.size()});
    scratch_.append(s);
  }
  // Appends to the scratch through a callback-free builder: call begin_copy(), append to
  // scratch(), then end_copy().
  std::string& scratch() { return scratch_; }
  size_t begin_copy() const { return scratch_.size(); }
  void end_copy(size_t from) {
    if (scratch_.size() > from) segs_.push_back({nullptr, from, scratch_.size() - from});
  }

  bool empty() const { return segs_.empty(); }
  bool pending() const { return pending_; }
  size_t bytes() const {
    size_t n = 0;
    for (const auto& s : segs_) n += s.len;
    return n;
  }

  enum Result { kDone = 0, kPending = 1 };
  // Returns kDone (all written now), kPending (cb runs when the rest is written) or a negative
  // libuv error. While pending, the batch must not be changed.
  int flush(uv_stream_t* stream, uv_write_cb cb, void* data) {
    if (segs_.empty()) return kDone;
    iov_.clear();
    for (const auto& s : segs_) {
      const char* base = s.ptr ? s.ptr : scratch_.data() + s.off;
      iov_.push_back(uv_buf_init(const_cast<char*>(base), static_cast<unsigned>(s.len)));
    }
    int n = uv_try_write(stream, iov_.data(), static_cast<unsigned>(iov_.size()));
    if (n < 0 && n != UV_EAGAIN) {
      clear();
      return n;
    }
    size_t written = n > 0 ? static_cast<size_t>(n) : 0;
    size_t i = 0;
    while (i < iov_.size() && written >= iov_[i].len) {
      written -= iov_[i].len;
      ++i;
    }
    if (i == iov_.size()) {
      clear();
      return kDone;
    }
    iov_[i].base += written;
    iov_[i].len -= static_cast<unsigned>(written);
    req_.data = data;
    int rc = uv_write(&req_, stream, iov_.data() + i, static_cast<unsigned>(iov_.size() - i), cb);
    if (rc < 0) {
      clear();
      return rc;
    }
    pending_ = true;
    return kPending;
  }
  // The same through a connection: encrypted first when it speaks TLS (TcpConn::tls_flush).
  int flush(TcpConn& conn, uv_write_cb cb, void* data) {
    if (!conn.tls()) return flush(conn.stream(), cb, data);
    if (segs_.empty()) return kDone;
    iov_.clear();
    for (const auto& s : segs_) {
      const char* base = s.ptr ? s.ptr : scratch_.data() + s.off;
      iov_.push_back(uv_buf_init(const_cast<char*>(base), static_cast<unsigned>(s.len)));
    }
    const int rc = conn.tls_flush(iov_.data(), iov_.size(), &req_, cb, data);
    clear();  // encrypted: the plaintext is not referred to any more
    if (rc == kPending) pending_ = true;
    return rc;
  }
  // From the write callback: the batch is free again.
  void done() {
    pending_ = false;
    clear();
  }
  void clear() {
    segs_.clear();
    scratch_.clear();
  }
  // Gives the storage back (a connection gone quiet); not while a write is pending.
  void shrink() {
    if (pending_) return;
    std::vector<Seg>().swap(segs_);
    std::string().swap(scratch_);
    std::vector<uv_buf_t>().swap(iov_);
  }

 private:
  struct Seg {
    const char* ptr;  // nullptr = in scratch at off
    size_t off;
    size_t len;
  };
  std::vector<Seg> segs_;
  std::vector<uv_buf_t> iov_;
  std::string scratch_;
  uv_write_t req_{};
  bool pending_ = false;
};

}  // namespace sy::net

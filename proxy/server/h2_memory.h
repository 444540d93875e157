// The allocator one HTTP/2 session's library state lives in (an nghttp2_mem). Blocks come from
// malloc as before, except the big ones taken while the session is being built (libnghttp2 1.52's
// outbound frame buffer: one 16 KiB chunk it keeps for the session's life, with no option to
// release it): those get pages of their own, which release_idle() hands back to the kernel while
// the session is quiet. An idle HTTP/2 connection then costs a few KiB, as HAProxy's does (it
// returns its buffers to a pool when a connection goes quiet); the pages come back, zeroed, the
// next time a frame is built in them.
//
// Safe because the library builds each frame in that buffer and is done with it once the frame
// was handed out (nghttp2_session_mem_send copies it to us): with nothing to send, its contents
// are dead. The caller checks that (nghttp2_session_want_write() == 0). Only blocks taken inside
// building() qualify: a big block taken later may be a header value being decoded (an rcbuf, its
// reference count at the front), which must survive a quiet spell.
//
// Zeroed blocks of a page or more (the stream map's table, calloc'd at the first stream) get pages
// of their own too, and release_idle() hands back those whose bytes are all zero again (the map
// with every stream gone, closed streams not kept): the kernel's fresh pages read as the same
// zeros, so that needs no knowledge of the library at all.
//
// Threading: the session's loop only.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstddef>

namespace sy::server {

class H2Memory {
 public:
  H2Memory();
  ~H2Memory();
  H2Memory(const H2Memory&) = delete;
  H2Memory& operator=(const H2Memory&) = delete;

  nghttp2_mem* mem() { return &mem_; }
  // Around the library's session constructor: big blocks taken meanwhile get pages of their own.
  void building(bool on) { building_ = on; }
  // Those blocks' pages go back to the kernel (their contents must be dead: see above).
  void release_idle();
  // Bytes in blocks with pages of their own (resident or not): for the tests.
  size_t paged_bytes() const;
  // Of those, the bytes in pages the process holds now (mincore): for the tests.
  size_t resident_bytes() const;

  // A block this size or larger, taken while building, gets pages of its own.
  static constexpr size_t kBig = 16 * 1024;
  // A zeroed (calloc) block this size or larger gets pages of its own.
  static constexpr size_t kZeroed = 4096;

 private:
  struct Block {
    void* p = nullptr;
    size_t len = 0;      // the mapping's length (whole pages)
    bool dead = false;   // taken while building: contents dead when quiet (else: released if zero)
  };
  static void* on_malloc(size_t n, void* self);
  static void on_free(void* p, void* self);
  static void* on_calloc(size_t nmemb, size_t size, void* self);
  static void* on_realloc(void* p, size_t n, void* self);
  void* alloc(size_t n, bool zero);
  void* paged(size_t n, bool dead);
  Block* find(void* p);

  // The library takes two (the frame buffer's first chunk, the stream map); spares for a future
  // version. Past them, blocks come from malloc.
  Block big_[4];
  bool building_ = false;
  nghttp2_mem mem_;
};

}  // namespace sy::server

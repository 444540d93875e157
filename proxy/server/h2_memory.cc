// H2Memory: nghttp2's allocator for one session; its frame buffer in pages of its own.
#include "proxy/server/h2_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace sy::server {

namespace {
size_t page_size() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}
size_t page_round(size_t n) { return (n + page_size() - 1) / page_size() * page_size(); }
}  // namespace

H2Memory::H2Memory() : mem_{this, on_malloc, on_free, on_calloc, on_realloc} {}

H2Memory::~H2Memory() {
  for (Block& b : big_)
    if (b.p) munmap(b.p, b.len);
}

H2Memory::Block* H2Memory::find(void* p) {
  for (Block& b : big_)
    if (b.p == p) return &b;
  return nullptr;
}

void* H2Memory::paged(size_t n, bool dead) {
  Block* b = find(nullptr);
  if (!b) return nullptr;
  const size_t len = page_round(n);
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;  // (the map count limit, say: malloc then)
  *b = {p, len, dead};
  return p;  // (fresh pages are zeroed)
}

void* H2Memory::alloc(size_t n, bool zero) {
  if ((building_ && n >= kBig) || (zero && n >= kZeroed))
    if (void* p = paged(n, building_ && n >= kBig)) return p;
  return zero ? std::calloc(1, n) : std::malloc(n);
}

void* H2Memory::on_malloc(size_t n, void* self) { return static_cast<H2Memory*>(self)->alloc(n, false); }

void* H2Memory::on_calloc(size_t nmemb, size_t size, void* self) {
  if (size != 0 && nmemb > static_cast<size_t>(-1) / size) return nullptr;
  return static_cast<H2Memory*>(self)->alloc(nmemb * size, true);
}

void H2Memory::on_free(void* p, void* self) {
  if (!p) return;
  if (Block* b = static_cast<H2Memory*>(self)->find(p)) {
    munmap(b->p, b->len);
    *b = {};
    return;
  }
  std::free(p);
}

void* H2Memory::on_realloc(void* p, size_t n, void* self) {
  auto* m = static_cast<H2Memory*>(self);
  if (!p) return m->alloc(n, false);
  Block* b = m->find(p);
  if (!b) return std::realloc(p, n);  // a malloc block stays one (header buffers that grow)
  if (n <= b->len) return p;
  void* q = std::malloc(n);  // (grown after building: no longer released)
  if (!q) return nullptr;
  std::memcpy(q, p, b->len);
  munmap(b->p, b->len);
  *b = {};
  return q;
}

void H2Memory::release_idle() {
  const size_t page = page_size();
  for (Block& b : big_) {
    if (!b.p) continue;
    if (b.dead) {
      madvise(b.p, b.len, MADV_DONTNEED);
      continue;
    }
    // Page by page: a resident page of zeros goes back (pages not resident are not read: that
    // would map them again).
    unsigned char in[64];
    const size_t pages = b.len / page;
    if (pages > sizeof in || mincore(b.p, b.len, in) != 0) continue;
    for (size_t i = 0; i < pages; ++i) {
      auto* q = static_cast<unsigned char*>(b.p) + i * page;
      if ((in[i] & 1) && q[0] == 0 && std::memcmp(q, q + 1, page - 1) == 0) madvise(q, page, MADV_DONTNEED);
    }
  }
}

size_t H2Memory::paged_bytes() const {
  size_t n = 0;
  for (const Block& b : big_) n += b.len;
  return n;
}

size_t H2Memory::resident_bytes() const {
  const size_t page = page_size();
  size_t n = 0;
  for (const Block& b : big_) {
    if (!b.p) continue;
    unsigned char in[64];  // a block of up to 64 pages (the frame buffer takes 5)
    const size_t pages = b.len / page;
    if (pages > sizeof in || mincore(b.p, b.len, in) != 0) continue;
    for (size_t i = 0; i < pages; ++i) n += (in[i] & 1) ? page : 0;
  }
  return n;
}

}  // namespace sy::server

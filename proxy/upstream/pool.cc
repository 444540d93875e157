// Pool: per-instance idle lists.
#include "proxy/upstream/pool.h"

namespace sy::upstream {

UpstreamConn* Pool::take(uint64_t uid) {
  auto it = idle_.find(uid);
  if (it == idle_.end() || !it->second) return nullptr;
  UpstreamConn* c = it->second;
  it->second = c->next;
  if (c->next) c->next->prev = nullptr;
  else idle_.erase(it);
  c->prev = c->next = nullptr;
  c->pool_ = nullptr;
  --count_;
  return c;
}

void Pool::put(UpstreamConn* c) {
  UpstreamConn*& head = idle_[c->uid()];
  c->prev = nullptr;
  c->next = head;
  if (head) head->prev = c;
  head = c;
  c->pool_ = this;
  ++count_;
}

void Pool::remove(UpstreamConn* c) {
  if (c->pool_ != this) return;
  if (c->prev) {
    c->prev->next = c->next;
  } else {
    auto it = idle_.find(c->uid());
    if (it != idle_.end()) {
      it->second = c->next;
      if (!c->next) idle_.erase(it);
    }
  }
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
  c->pool_ = nullptr;
  --count_;
}

void Pool::close_all() {
  close_if([](uint64_t) { return true; });
}

}  // namespace sy::upstream

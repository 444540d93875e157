// Work put off to the end of this loop turn: a check handle runs it after every I/O callback of
// the poll, so what one poll delivered is acted on once (an HTTP/2 connection writes the frames of
// every response its upstream reads handed over in one writev, not one each). An idle handle
// keeps the loop from blocking in between when the work was asked for outside the poll (a timer's
// callback), so nothing waits for the next event.
//
// Threading: one loop's. Handles are made on first use and closed with the loop's other handles.
#pragma once

#include <uv.h>

#include <cstddef>
#include <vector>

namespace sy::net {

class EndOfTurn {
 public:
  // What is run. `due` is the client's own "listed" flag, so listing twice costs nothing.
  struct Client {
    virtual void at_end_of_turn() = 0;
    bool due = false;

   protected:
    ~Client() = default;
  };

  // `loop` is the one this object serves (always the same).
  void add(uv_loop_t* loop, Client* c) {
    if (c->due) return;
    c->due = true;
    if (!made_) {
      made_ = true;
      uv_check_init(loop, &check_);
      check_.data = this;
      uv_idle_init(loop, &idle_);
    }
    if (due_.empty()) {
      uv_check_start(&check_, run);
      uv_idle_start(&idle_, [](uv_idle_t*) {});
    }
    due_.push_back(c);
  }
  // A client going away while listed.
  void remove(Client* c) {
    if (!c->due) return;
    c->due = false;
    for (Client*& d : due_)
      if (d == c) d = nullptr;
  }

 private:
  static void run(uv_check_t* h) {
    auto* t = static_cast<EndOfTurn*>(h->data);
    // By index: a client's work may list more (they run in this pass) or remove one (nulled,
    // never dangling).
    for (size_t i = 0; i < t->due_.size(); ++i) {
      Client* c = t->due_[i];
      if (!c) continue;
      c->due = false;
      c->at_end_of_turn();
    }
    t->due_.clear();
    uv_check_stop(&t->check_);
    uv_idle_stop(&t->idle_);
  }

  std::vector<Client*> due_;
  uv_check_t check_{};
  uv_idle_t idle_{};
  bool made_ = false;
};

}  // namespace sy::net

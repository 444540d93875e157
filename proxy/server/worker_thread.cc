// WorkerThread: a proxy loop on its own thread; the Inbox back to the main loop.
#include "proxy/server/worker_thread.h"

#include "proxy/net/close.h"
#include "proxy/net/log.h"
#include "proxy/server/downstream_conn.h"

namespace sy::server {

namespace {
constexpr uint64_t kTickMs = 100;  // access-log flush, pooled connections to departed instances
}

// ---- Inbox ----

void Inbox::post(std::vector<health::Runtime::Report>& batch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (reports_.empty()) reports_.swap(batch);
    else reports_.insert(reports_.end(), std::make_move_iterator(batch.begin()), std::make_move_iterator(batch.end()));
  }
  batch.clear();
  uv_async_send(wake_);
}

void Inbox::drained() {
  drained_.fetch_add(1, std::memory_order_acq_rel);
  uv_async_send(wake_);
}

std::vector<health::Runtime::Report> Inbox::take() {
  std::vector<health::Runtime::Report> out;
  std::lock_guard<std::mutex> lock(mu_);
  out.swap(reports_);
  return out;
}

// ---- WorkerThread ----

WorkerThread::WorkerThread(int index, RoutingTableSlot& table, ExchangeObserver& observer, Inbox& inbox)
    : observer_(observer), inbox_(inbox) {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &wake_, on_wake);
  wake_.data = this;
  uv_check_init(&loop_, &check_);
  check_.data = this;
  uv_timer_init(&loop_, &tick_);
  tick_.data = this;
  worker_.loop = &loop_;
  worker_.table = &table;
  worker_.observer = &observer;
  worker_.app = this;
  worker_.on_drained = on_drained;
  worker_.rng.mix(uv_hrtime() + static_cast<uint64_t>(index) * 0x9E3779B97F4A7C15ull);
}

WorkerThread::~WorkerThread() {
  stop();
  uv_loop_close(&loop_);
}

std::string WorkerThread::listen(const conf::Address& addr, conf::Address& bound) {
  auto l = std::make_unique<net::Listener>();
  std::string e = l->open(&loop_, addr, true, [](void* ctx, uv_stream_t* s, int status) {
    DownstreamConn::accept(*static_cast<Worker*>(ctx), s, status);
  }, &worker_);
  if (!e.empty()) return e;
  bound = l->bound();
  worker_.own_listeners.push_back(bound);
  worker_.listeners.push_back(std::move(l));
  return "";
}

void WorkerThread::start() {
  uv_check_start(&check_, on_check);
  uv_timer_start(&tick_, on_tick, kTickMs, kTickMs);
  thread_ = std::thread([this] { run(); });
}

void WorkerThread::run() {
  worker_.snapshot();
  uv_run(&loop_, UV_RUN_DEFAULT);
  // Close whatever is left so every handle's memory is released before the loop is.
  uv_walk(&loop_, [](uv_handle_t* h, void*) {
    if (!uv_is_closing(h)) net::close_socket(h, nullptr);  // (uv_fileno fails for timers and the like)
  }, nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  observer_.flush();
}

void WorkerThread::notify_snapshot() {
  flags_.fetch_or(kSnapshot, std::memory_order_acq_rel);
  uv_async_send(&wake_);
}

void WorkerThread::begin_shutdown() {
  flags_.fetch_or(kShutdown, std::memory_order_acq_rel);
  uv_async_send(&wake_);
}

void WorkerThread::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (!thread_.joinable()) {
    // Never started (start-up failed after the listeners were bound): close its handles here.
    worker_.close_all();
    uv_walk(&loop_, [](uv_handle_t* h, void*) {
      if (!uv_is_closing(h)) net::close_socket(h, nullptr);  // (uv_fileno fails for timers and the like)
    }, nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    return;
  }
  flags_.fetch_or(kStop, std::memory_order_acq_rel);
  uv_async_send(&wake_);
  thread_.join();
}

void WorkerThread::on_wake(uv_async_t* a) {
  auto* t = static_cast<WorkerThread*>(a->data);
  const uint32_t f = t->flags_.exchange(0, std::memory_order_acq_rel);
  Worker& w = t->worker_;
  if (f & kSnapshot) w.snapshot();  // lets the previous snapshot (and departed instances) go now
  if (f & kShutdown) w.begin_shutdown();
  if (f & kStop) {
    w.close_all();
    if (!w.outcomes.empty()) t->inbox_.post(w.outcomes);
    uv_stop(&t->loop_);
  }
  t->conns_.store(w.conn_count, std::memory_order_relaxed);
}

void WorkerThread::on_check(uv_check_t* c) {
  // Once per loop iteration: this iteration's outcomes go to the main loop in one message.
  auto* t = static_cast<WorkerThread*>(c->data);
  if (!t->worker_.outcomes.empty()) t->inbox_.post(t->worker_.outcomes);
}

void WorkerThread::on_tick(uv_timer_t* tm) {
  auto* t = static_cast<WorkerThread*>(tm->data);
  t->observer_.flush();
  t->worker_.upkeep();
  t->conns_.store(t->worker_.conn_count, std::memory_order_relaxed);
}

void WorkerThread::on_drained(Worker* w) {
  auto* t = static_cast<WorkerThread*>(w->app);
  if (t->stopped_drained_) return;
  t->stopped_drained_ = true;
  t->inbox_.drained();
}

}  // namespace sy::server

#include "registry/etcd/presence.h"

#include <memory>

#include "proxy/http/base64.h"

namespace sy::registry::etcd {

namespace {
std::string b64(const std::string& s) { return http::base64_encode(s); }
}  // namespace

Presence::Presence(uv_loop_t* loop, Client& client, std::string prefix, std::string id, std::function<void(uint32_t)> on_count)
    : client_(client), key_(prefix + "proxies/" + id), range_(prefix + "proxies/"), on_count_(std::move(on_count)) {
  renew_timer_ = new uv_timer_t;
  count_timer_ = new uv_timer_t;
  uv_timer_init(loop, renew_timer_);
  uv_timer_init(loop, count_timer_);
  renew_timer_->data = count_timer_->data = this;
}

Presence::~Presence() {
  *alive_ = false;  // calls still in flight find us gone
  for (uv_timer_t* t : {renew_timer_, count_timer_}) {
    uv_timer_stop(t);
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
}

void Presence::start() {
  grant();
  uv_timer_start(count_timer_, on_count_timer, 0, kCountMs);
}

void Presence::on_renew_timer(uv_timer_t* t) { static_cast<Presence*>(t->data)->renew(); }
void Presence::on_count_timer(uv_timer_t* t) { static_cast<Presence*>(t->data)->recount(); }

void Presence::grant() {
  lease_ = 0;
  const uint64_t gen = ++generation_;
  std::weak_ptr<bool> alive = alive_;
  client_.call("/v3/lease/grant", nlohmann::json{{"TTL", std::to_string(kTtlSeconds)}}, [this, gen, alive](Result& r) {
    if (alive.expired() || gen != generation_) return;
    const int64_t id = r.ok ? int_field(r.body, "ID") : 0;
    if (id == 0) {
      uv_timer_start(renew_timer_, [](uv_timer_t* t) { static_cast<Presence*>(t->data)->grant(); }, kRenewMs, 0);
      return;
    }
    client_.call("/v3/kv/put", nlohmann::json{{"key", b64(key_)}, {"value", b64("{}")}, {"lease", std::to_string(id)}},
                 [this, gen, alive, id](Result& put) {
                   if (alive.expired() || gen != generation_) return;
                   if (!put.ok) {
                     uv_timer_start(renew_timer_, [](uv_timer_t* t) { static_cast<Presence*>(t->data)->grant(); }, kRenewMs, 0);
                     return;
                   }
                   lease_ = id;
                   uv_timer_start(renew_timer_, on_renew_timer, kRenewMs, kRenewMs);
                 });
  });
}

void Presence::renew() {
  if (lease_ == 0) return;
  const uint64_t gen = generation_;
  std::weak_ptr<bool> alive = alive_;
  client_.call("/v3/lease/keepalive", nlohmann::json{{"ID", std::to_string(lease_)}}, [this, gen, alive](Result& r) {
    if (alive.expired() || gen != generation_ || !r.ok) return;  // unreachable: try again next time
    // A lease that ran out (etcd answers TTL 0, or no TTL): take a new one and put the key again.
    const nlohmann::json& res = r.body.contains("result") ? r.body["result"] : r.body;
    if (int_field(res, "TTL") <= 0) {
      uv_timer_stop(renew_timer_);
      grant();
    }
  });
}

void Presence::recount() {
  std::weak_ptr<bool> alive = alive_;
  client_.call("/v3/kv/range", nlohmann::json{{"key", b64(range_)}, {"range_end", b64(prefix_end(range_))}, {"count_only", true}},
               [this, alive](Result& r) {
                 if (alive.expired() || !r.ok) return;  // etcd away: keep the last count
                 int64_t n = int_field(r.body, "count");
                 if (n < 1) n = 1;  // before our own key lands, we still count
                 if (static_cast<uint32_t>(n) == count_) return;
                 count_ = static_cast<uint32_t>(n);
                 if (on_count_) on_count_(count_);
               });
}

}  // namespace sy::registry::etcd

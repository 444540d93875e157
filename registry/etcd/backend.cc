// Backend: the local registry kept in step with etcd (writes, full reads, the watch, the probe).
#include "registry/etcd/backend.h"

#include <chrono>

#include "proxy/http/base64.h"
#include "registry/codec.h"
#include "registry/etcd/txn.h"
#include "registry/etcd/watch.h"

namespace sy::registry::etcd {

namespace {
using json = nlohmann::json;
constexpr uint64_t kProbeEveryMs = 1000;
constexpr int64_t kPageSize = 1000;    // keys per range call while reading everything
constexpr unsigned kStallCheckEvery = 5;  // probes
constexpr size_t kSpareTtls = 8;       // TTLs with spare leases kept ready
constexpr size_t kSparesPerTtl = 16;

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string b64(const std::string& s) { return http::base64_encode(s); }
}  // namespace

Backend::Backend(uv_loop_t* loop, Registry& reg, const conf::EtcdConf& cfg, Hooks hooks,
                 std::shared_ptr<const net::TlsClientConfig> tls)
    : loop_(loop), reg_(reg), cfg_(cfg), hooks_(std::move(hooks)),
      client_(loop, cfg.endpoints, static_cast<uint64_t>(cfg.timeout.count()), std::move(tls)) {
  rng_.mix(uv_hrtime());
}

Backend::~Backend() {
  // The client closes its connections without calling back; the timers free themselves once closed.
  for (uv_timer_t* t : {probe_timer_, watch_timer_}) {
    if (!t) continue;
    uv_timer_stop(t);
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
}

void Backend::start() {
  probe_timer_ = new uv_timer_t{};
  watch_timer_ = new uv_timer_t{};
  uv_timer_init(loop_, probe_timer_);
  uv_timer_init(loop_, watch_timer_);
  probe_timer_->data = watch_timer_->data = this;
  hooks_.on_up(false);
  probe();
}

std::string Backend::key_of(const std::string& service, const std::string& id) const {
  return instance_key(cfg_.prefix, service, id);
}

bool Backend::parse_key(const std::string& key, std::string& service, std::string& id) const {
  return parse_instance_key(cfg_.prefix, key, service, id);
}

// ---- availability ----

void Backend::schedule_probe(uint64_t delay_ms) {
  uv_timer_start(probe_timer_, [](uv_timer_t* t) { static_cast<Backend*>(t->data)->probe(); }, delay_ms, 0);
}

void Backend::probe() {
  if (probing_) return;
  probing_ = true;
  // A linearizable read of one key: answered only by a member that is part of a quorum.
  client_.call("/v3/kv/range", json{{"key", b64(cfg_.prefix)}, {"count_only", true}}, [this](Result& r) {
    probing_ = false;
    if (!r.ok) {
      hooks_.on_error();
      client_.next_endpoint();
      if (++probe_tries_ < cfg_.endpoints.size()) {
        schedule_probe(0);  // the next member, at once
        return;
      }
      probe_failed(r.error);
      return;
    }
    probe_tries_ = 0;
    probe_failures_ = 0;
    set_up(true, "");
    if (!synced_ || resync_needed_) {
      if (!syncing_) start_sync();
    } else if (!syncing_ && (!client_.watching() || !(client_.watch_peer() == client_.endpoint()))) {
      // No watch, or one left on a member the probe had to move away from (stopped, frozen, cut
      // off): resume on the member that answered.
      start_watch();
    } else if (++probes_ % kStallCheckEvery == 0 && !syncing_) {
      check_stall();
    }
    schedule_probe(kProbeEveryMs);
  });
}

void Backend::check_stall() {
  const std::string start = cfg_.prefix + "services/";
  json req{{"key", b64(start)}, {"range_end", b64(prefix_end(start))}, {"limit", "1"}, {"keys_only", true},
           {"sort_order", "DESCEND"}, {"sort_target", "MOD"}};
  client_.call("/v3/kv/range", req, [this](Result& r) {
    if (!r.ok || syncing_ || !client_.watching()) return;
    int64_t newest = 0;
    if (r.body.contains("kvs") && r.body["kvs"].is_array() && !r.body["kvs"].empty()) newest = int_field(r.body["kvs"][0], "mod_revision");
    if (newest <= last_rev_) {
      stall_suspect_ = 0;
      return;
    }
    if (stall_suspect_ == 0 || newest < stall_suspect_) {
      stall_suspect_ = newest;  // may be an event still on its way: look again next time
      return;
    }
    hooks_.on_error();
    hooks_.warn("shared registry: the watch delivered nothing past revision " + std::to_string(last_rev_) + " while etcd holds revision " +
                std::to_string(newest) + " under the prefix; opening it again");
    stall_suspect_ = 0;
    client_.cancel_watch();
    start_watch();
  });
}

void Backend::probe_failed(const std::string& why) {
  probe_tries_ = 0;
  set_up(false, why);
  client_.cancel_watch();  // a member without quorum keeps a watch open and silent
  ++watch_generation_;
  // Exponential backoff (250 ms doubling to 5 s) with full jitter, so a fleet of proxies does not
  // return to etcd in step.
  const uint64_t cap = net::backoff_ceiling(250, 5000, static_cast<uint32_t>(++probe_failures_));
  schedule_probe(net::equal_jitter(cap, rng_.next()));
}

void Backend::set_up(bool up, const std::string& why) {
  if (up == up_) return;
  up_ = up;
  hooks_.on_up(up);
  if (up) {
    hooks_.info(std::string("shared registry: etcd reachable") + (ever_up_ ? " again" : "") + " at " + client_.endpoint().text);
    ever_up_ = true;
  } else {
    hooks_.warn("shared registry: etcd unreachable (" + why + "); routing continues on the last registry seen, changes answer 503 until it returns");
  }
}

// ---- reading everything ----

void Backend::start_sync() {
  syncing_ = true;
  client_.cancel_watch();
  ++watch_generation_;
  read_page(0, cfg_.prefix + "services/", std::make_shared<std::map<std::pair<std::string, std::string>, std::pair<std::string, int64_t>>>());
}

void Backend::read_page(int64_t revision, std::string from,
                        std::shared_ptr<std::map<std::pair<std::string, std::string>, std::pair<std::string, int64_t>>> seen) {
  json req{{"key", b64(from)}, {"range_end", b64(prefix_end(cfg_.prefix + "services/"))}, {"limit", std::to_string(kPageSize)}};
  if (revision > 0) req["revision"] = std::to_string(revision);  // every page from the same revision
  const int64_t t0 = hooks_.now_ms();
  client_.call("/v3/kv/range", req, [this, revision, seen, t0](Result& r) {
    if (!r.ok) {
      hooks_.on_error();
      if (r.compacted()) {  // the revision went while paging: again
        seen->clear();
        read_page(0, cfg_.prefix + "services/", seen);
        return;
      }
      syncing_ = false;
      resync_needed_ = true;
      hooks_.warn("shared registry: reading the registry from etcd failed: " + r.error);
      if (r.unavailable) probe_failed(r.error);
      return;
    }
    const int64_t rev = revision > 0 ? revision : r.revision;
    std::string last;
    if (r.body.contains("kvs") && r.body["kvs"].is_array()) {
      for (const auto& kv : r.body["kvs"]) {
        last = http::base64_decode(str_field(kv, "key"));
        std::string service, id;
        if (!parse_key(last, service, id)) continue;
        (*seen)[{service, id}] = {http::base64_decode(str_field(kv, "value")), int_field(kv, "lease")};
      }
    }
    if (bool_field(r.body, "more") && !last.empty()) {
      read_page(rev, last + '\0', seen);
      return;
    }
    // Reconcile: the store is the truth for dynamic instances (changes of this proxy still on
    // their way to etcd excepted).
    const int64_t now = hooks_.now_ms();
    for (const auto& [k, v] : *seen) {
      if (pending_keys_.count(k) || inflight_keys_.count(k)) continue;
      apply_put(k.first, k.second, v.first, v.second, false);
    }
    std::vector<std::pair<std::string, std::string>> gone;
    for (const auto& [name, svc] : reg_.services())
      for (const auto& [id, inst] : svc.instances) {
        if (inst.source != Source::kDynamic || inst.stale) continue;
        std::pair<std::string, std::string> k{name, id};
        if (!seen->count(k) && !pending_keys_.count(k) && !inflight_keys_.count(k)) gone.push_back(k);
      }
    for (const auto& [s, id] : gone) reg_.remove_remote(s, id);
    (void)now;
    last_rev_ = rev;
    const bool first = !synced_;
    synced_ = true;
    syncing_ = false;
    resync_needed_ = false;
    hooks_.info(std::string("shared registry: ") + (first ? "read" : "read again") + " from etcd " + client_.endpoint().text +
                ": " + std::to_string(seen->size()) + " instances at revision " + std::to_string(rev) + " in " +
                std::to_string(hooks_.now_ms() - t0) + " ms" + (gone.empty() ? "" : ", " + std::to_string(gone.size()) + " gone"));
    start_watch();
  });
}

// ---- the watch ----

void Backend::start_watch() {
  const uint64_t gen = ++watch_generation_;
  json create{{"key", b64(cfg_.prefix)}, {"range_end", b64(prefix_end(cfg_.prefix))},
              {"start_revision", std::to_string(last_rev_ + 1)}, {"progress_notify", true}};
  client_.watch(create,
                [this, gen](const json& result) {
                  if (gen == watch_generation_) on_watch_message(result);
                },
                [this, gen](const std::string& why) {
                  if (gen == watch_generation_) on_watch_end(why);
                });
}

void Backend::on_watch_end(const std::string& why) {
  hooks_.on_error();
  ++watch_generation_;
  hooks_.warn("shared registry: watch on etcd " + client_.endpoint().text + " ended (" + why + "); resuming from revision " +
              std::to_string(last_rev_ + 1));
  client_.next_endpoint();
  uv_timer_start(watch_timer_, [](uv_timer_t* t) {
    auto* b = static_cast<Backend*>(t->data);
    if (b->up_ && !b->syncing_ && !b->client_.watching()) b->start_watch();
  }, 200 + rng_.upto(299), 0);
}

void Backend::on_watch_message(const json& result) {
  const WatchMessage m = decode_watch_message(result, cfg_.prefix);
  if (m.canceled) {
    if (m.compact_revision > 0) {
      hooks_.warn("shared registry: etcd compacted revision " + std::to_string(last_rev_ + 1) + " (oldest kept " +
                  std::to_string(m.compact_revision) + "); reading everything again");
      start_sync();
    } else {
      on_watch_end("canceled by etcd: " + (m.cancel_reason.empty() ? std::string("no reason given") : m.cancel_reason));
    }
    return;
  }
  last_rev_ = std::max({last_rev_, m.progress_revision, m.last_revision});
  auto ours = [&](const std::pair<std::string, std::string>& k) { return pending_keys_.count(k) || inflight_keys_.count(k); };
  // Removes instances kept here as stale too, which have no key left to delete.
  for (const auto& k : m.deregistered)
    if (!ours(k)) apply_delete(k.first, k.second, false);
  for (const WatchChange& c : m.changes) {
    const std::pair<std::string, std::string> k{c.service, c.id};
    if (pending_keys_.count(k)) continue;  // this proxy's newer change will follow it into etcd
    if (inflight_keys_.count(k)) {
      deferred_[k] = {c.revision, c.put, c.value, c.lease, c.expired};
      continue;
    }
    if (c.put) apply_put(c.service, c.id, c.value, c.lease, true);
    else apply_delete(c.service, c.id, c.expired);
  }
}

void Backend::apply_put(const std::string& service, const std::string& id, const std::string& value, int64_t lease, bool from_watch) {
  json j = json::parse(value, nullptr, false);
  Registration r;
  Error err;
  if (j.is_discarded() || !decode_registration(j, r, DocKind::kStored, err) || r.service != service || r.id != id) {
    hooks_.on_error();
    hooks_.warn("shared registry: ignoring the value of " + key_of(service, id) + ": " +
                (j.is_discarded() ? std::string("not JSON") : err.message.empty() ? "service or id differ from the key" : err.message));
    return;
  }
  reg_.apply_remote(r, lease, hooks_.now_ms());
  if (from_watch && r.written_at_ms > 0) hooks_.on_sync_lag(std::max<int64_t>(0, wall_ms() - r.written_at_ms) / 1000.0);
}

void Backend::apply_delete(const std::string& service, const std::string& id, bool expired) {
  if (expired) reg_.lease_lost(service, id, hooks_.now_ms());
  else reg_.remove_remote(service, id);
}

// ---- writing ----

void Backend::write(std::vector<std::pair<std::string, std::string>> keys, Done done) {
  for (auto& k : keys) pending_keys_.insert(std::move(k));
  pending_dones_.push_back(std::move(done));
  flush();
}

void Backend::flush() {
  if (pending_keys_.empty() && pending_dones_.empty()) return;
  for (const auto& k : pending_keys_)
    if (inflight_keys_.count(k)) return;  // sent when that batch is answered
  auto owned = std::make_unique<Batch>();
  Batch& b = *owned;
  b.id = ++next_batch_;
  inflight_[b.id] = std::move(owned);
  b.dones = std::exchange(pending_dones_, {});
  const auto keys = std::exchange(pending_keys_, {});
  const int64_t written_at = wall_ms();
  for (const auto& [service, id] : keys) {
    inflight_keys_[{service, id}] = b.id;
    Op op;
    op.service = service;
    op.id = id;
    const Instance* inst = reg_.find(service, id);
    if (inst && inst->source == Source::kDynamic) {
      Registration r = registration_of(*inst);
      r.written_at_ms = written_at;
      op.put = true;
      op.value = encode_registration(r, DocKind::kStored).dump();
      op.ttl_s = inst->ttl.count() > 0 ? (inst->ttl.count() + 999) / 1000 : 0;
    }
    b.ops.push_back(std::move(op));
  }
  send_batch(b);
}

int64_t Backend::take_spare_lease(int64_t ttl_s) {
  auto it = spares_.find(ttl_s);
  if (it == spares_.end()) {
    if (spares_.size() >= kSpareTtls) return 0;  // a TTL nobody else uses: granted on demand
    it = spares_.emplace(ttl_s, std::vector<Spare>{}).first;
    for (size_t i = 0; i < kSparesPerTtl; ++i) grant_spare(ttl_s);
    return 0;
  }
  auto& pool = it->second;
  const int64_t now = hooks_.now_ms();
  // A spare is used only while most of its TTL is left (the keepalive sent with the put restores
  // the rest); older ones are dropped and run out in etcd unused.
  std::erase_if(pool, [&](const Spare& s) { return now - s.granted_ms > ttl_s * 1000 / 4; });
  grant_spare(ttl_s);  // one taken (or one wanted): one more on the way
  if (pool.empty()) return 0;
  const int64_t lease = pool.back().lease;
  pool.pop_back();
  return lease;
}

void Backend::grant_spare(int64_t ttl_s) {
  if (!up_) return;
  client_.call("/v3/lease/grant", json{{"TTL", std::to_string(ttl_s)}}, [this, ttl_s](Result& r) {
    auto it = spares_.find(ttl_s);
    if (!r.ok || it == spares_.end() || it->second.size() >= kSparesPerTtl * 4) return;
    it->second.push_back({int_field(r.body, "ID"), hooks_.now_ms()});
  });
}

void Backend::send_batch(Batch& b) {
  ++b.attempts;
  b.error.clear();
  b.unavailable = false;
  b.revision = 0;
  b.waiting = 0;
  for (Op& op : b.ops) {
    if (!op.put || op.ttl_s <= 0) continue;
    op.lease = b.attempts == 1 ? take_spare_lease(op.ttl_s) : 0;
    if (op.lease != 0) {
      // Restart the spare's clock; sent with the put, not before it (a renewal is no Raft round).
      client_.call("/v3/lease/keepalive", json{{"ID", std::to_string(op.lease)}}, [](Result&) {});
      continue;
    }
    ++b.waiting;
  }
  if (b.waiting == 0) {
    commit_batch(b);
    return;
  }
  // One lease per instance, granted side by side (each is a Raft round trip); the puts follow.
  const uint64_t id = b.id;
  for (size_t i = 0; i < b.ops.size(); ++i) {
    if (!b.ops[i].put || b.ops[i].ttl_s <= 0 || b.ops[i].lease != 0) continue;
    client_.call("/v3/lease/grant", json{{"TTL", std::to_string(b.ops[i].ttl_s)}}, [this, id, i](Result& r) {
      Batch& batch = *inflight_.at(id);
      if (r.ok) batch.ops[i].lease = int_field(r.body, "ID");
      else if (batch.error.empty()) batch.error = r.error, batch.unavailable = r.unavailable;
      if (--batch.waiting > 0) return;
      if (batch.error.empty()) commit_batch(batch);
      else finish_batch(batch);
    });
  }
}

void Backend::commit_batch(Batch& b) {
  std::vector<TxnOp> ops;
  ops.reserve(b.ops.size());
  for (const Op& op : b.ops) ops.push_back({key_of(op.service, op.id), op.put, op.value, op.lease});
  const std::vector<json> txns = plan_transactions(ops, deregistrations_key(cfg_.prefix));
  b.waiting = txns.size();
  if (b.waiting == 0) {
    finish_batch(b);
    return;
  }
  const uint64_t id = b.id;
  for (const json& t : txns) {
    client_.call("/v3/kv/txn", t, [this, id](Result& r) {
      Batch& batch = *inflight_.at(id);
      if (r.ok) batch.revision = std::max(batch.revision, r.revision);
      else if (batch.error.empty()) batch.error = r.error, batch.unavailable = r.unavailable;
      if (--batch.waiting == 0) finish_batch(batch);
    });
  }
}

void Backend::finish_batch(Batch& b) {
  if (!b.error.empty() && b.unavailable && b.attempts < static_cast<int>(cfg_.endpoints.size()) + 1 && up_) {
    // Another member may serve it; writing the same values again is harmless (a put of the same
    // value, a delete of a deleted key; an extra lease runs out unused).
    hooks_.on_error();
    hooks_.warn("shared registry: writing to etcd " + client_.endpoint().text + " failed (" + b.error + "); trying the next member");
    client_.next_endpoint();
    send_batch(b);
    return;
  }
  std::unique_ptr<Batch> done = std::move(inflight_.at(b.id));
  inflight_.erase(b.id);
  for (const Op& op : done->ops) inflight_keys_.erase({op.service, op.id});
  if (done->error.empty()) {
    for (const Op& op : done->ops) {
      if (op.put)
        reg_.set_shared_lease(op.service, op.id, op.lease);
      // What other proxies wrote to this key after this batch (seen while it was in flight).
      auto d = deferred_.find({op.service, op.id});
      if (d == deferred_.end()) continue;
      const Deferred ev = std::move(d->second);
      deferred_.erase(d);
      if (ev.revision <= done->revision || pending_keys_.count({op.service, op.id})) continue;
      if (ev.put) apply_put(op.service, op.id, ev.value, ev.lease, true);
      else apply_delete(op.service, op.id, ev.expired);
    }
  } else {
    // Applied here, not in etcd: the next full read puts this proxy back in line with the store.
    for (const Op& op : done->ops) deferred_.erase({op.service, op.id});
    hooks_.on_error();
    resync_needed_ = true;
    hooks_.warn("shared registry: " + std::to_string(done->ops.size()) + " changes not written to etcd: " + done->error);
    if (done->unavailable) probe_failed(done->error);
    else if (!syncing_) start_sync();  // etcd said no to these writes, and is there: read it back now
  }
  for (auto& d : done->dones) d(done->error, done->unavailable);
  if (!up_) {
    // Changes gathered meanwhile fail too (new ones are refused while etcd is away).
    auto dones = std::exchange(pending_dones_, {});
    pending_keys_.clear();
    for (auto& d : dones) d("etcd is unreachable", true);
    return;
  }
  flush();
}

// ---- leases ----

void Backend::renew(std::vector<int64_t> leases, std::function<void(int status)> done) {
  if (!up_) {
    done(503);
    return;
  }
  struct Tally {
    size_t waiting = 0;
    int status = 200;
    std::function<void(int)> done;
  };
  auto tally = std::make_shared<Tally>();
  tally->done = std::move(done);
  for (int64_t lease : leases) {
    if (lease < 0) tally->status = 404;
    else ++tally->waiting;
  }
  if (tally->waiting == 0) {
    tally->done(tally->status);
    return;
  }
  for (int64_t lease : leases) {
    if (lease < 0) continue;
    client_.call("/v3/lease/keepalive", json{{"ID", std::to_string(lease)}}, [this, tally](Result& r) {
      if (!r.ok) {
        hooks_.on_error();
        tally->status = 503;
      } else {
        // An unknown (expired) lease comes back without a TTL.
        const json& res = r.body.contains("result") ? r.body["result"] : r.body;
        if (int_field(res, "TTL") <= 0 && tally->status == 200) tally->status = 404;
      }
      if (--tally->waiting == 0) tally->done(tally->status);
    });
  }
}

}  // namespace sy::registry::etcd

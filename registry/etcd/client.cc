// Client: etcd v3 JSON gateway calls, connection pool, endpoint rotation.
#include "registry/etcd/client.h"

#include <algorithm>
#include <charconv>

namespace sy::registry::etcd {

namespace {
// Enough connections that lease grants for a burst of registrations run side by side (each is a
// Raft round trip); few enough to be nothing to etcd.
constexpr size_t kPoolSize = 16;

// gRPC codes the gateway returns that mean "not now / not here" rather than "no".
bool unavailable_code(int64_t code) { return code == 14 /* UNAVAILABLE */ || code == 4 /* DEADLINE_EXCEEDED */; }
}  // namespace

std::string prefix_end(std::string prefix) {
  // The smallest key greater than every key starting with `prefix`: the last byte that is not
  // 0xff, plus one (etcd's clientv3.GetPrefixRangeEnd).
  while (!prefix.empty()) {
    unsigned char c = static_cast<unsigned char>(prefix.back());
    if (c < 0xff) {
      prefix.back() = static_cast<char>(c + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

std::string str_field(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool bool_field(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return false;
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

int64_t int_field(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return 0;
  auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (!it->is_string()) return 0;
  const std::string& s = it->get_ref<const std::string&>();
  int64_t out = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() ? out : 0;
}

Client::Client(uv_loop_t* loop, std::vector<conf::Address> endpoints, uint64_t timeout_ms,
               std::shared_ptr<const net::TlsClientConfig> tls)
    : loop_(loop), endpoints_(std::move(endpoints)), timeout_ms_(timeout_ms), tls_(std::move(tls)) {}

Client::~Client() {
  for (HttpConn* c : pool_) c->close(true);
  if (watch_) watch_->close(true);
}

void Client::next_endpoint() {
  current_ = (current_ + 1) % endpoints_.size();
  // Idle connections to the old member go; busy ones finish their calls and are dropped after.
  std::erase_if(pool_, [](HttpConn* c) {
    if (c->pending() > 0) return false;
    c->close(true);
    return true;
  });
}

HttpConn* Client::pick() {
  std::erase_if(pool_, [this](HttpConn* c) {
    if (!c->broken() && (c->peer() == endpoint() || c->pending() > 0)) return false;
    c->close(true);
    return true;
  });
  HttpConn* best = nullptr;
  for (HttpConn* c : pool_)
    if (c->peer() == endpoint() && (!best || c->pending() < best->pending())) best = c;
  if (best && (best->pending() == 0 || pool_.size() >= kPoolSize)) return best;
  HttpConn* c = HttpConn::open(loop_, endpoint(), timeout_ms_, [this](HttpConn* broken) { forget(broken); }, tls_);
  pool_.push_back(c);
  return c;
}

void Client::forget(HttpConn* c) {
  // Told from inside the connection's failure handling: close it from there (it deletes itself
  // once its handles are closed).
  auto it = std::find(pool_.begin(), pool_.end(), c);
  if (it != pool_.end()) {
    pool_.erase(it);
    c->close(true);
  }
}

Result Client::classify(int status, std::string body, const std::string& transport_error, const conf::Address& from) {
  Result r;
  if (!transport_error.empty()) {
    r.unavailable = true;
    r.error = transport_error;
    return r;
  }
  r.body = nlohmann::json::parse(body, nullptr, false);
  if (r.body.is_discarded() || !r.body.is_object()) {
    r.unavailable = true;  // not the gateway talking (a proxy in between, a wrong port)
    r.error = "etcd " + from.text + " answered " + std::to_string(status) + " with a body that is not a JSON object";
    r.body = nlohmann::json::object();
    return r;
  }
  if (status == 200) {
    r.ok = true;
    const auto& h = r.body.contains("result") ? r.body["result"] : r.body;
    if (h.is_object() && h.contains("header")) r.revision = int_field(h["header"], "revision");
    return r;
  }
  r.code = int_field(r.body, "code");
  const std::string msg = str_field(r.body, "error");
  r.error = "etcd " + from.text + ": " + (msg.empty() ? "HTTP " + std::to_string(status) : msg);
  // By code: etcd's "no leader" and "request timed out" are UNAVAILABLE; a gateway failing
  // itself answers 5xx.
  r.unavailable = unavailable_code(r.code) || status >= 500;
  return r;
}

void Client::call(std::string_view path, const nlohmann::json& body, Callback cb) {
  HttpConn* c = pick();
  const conf::Address from = c->peer();
  c->post(path, body.dump(), [cb = std::move(cb), from](int status, std::string resp, const std::string& err) {
    Result r = classify(status, std::move(resp), err, from);
    cb(r);
  });
}

void Client::watch(const nlohmann::json& create_request, Message on_message, Ended on_end) {
  cancel_watch();
  watch_ = HttpConn::open(loop_, endpoint(), timeout_ms_, [this](HttpConn* broken) {
    if (watch_ == broken) {
      watch_ = nullptr;
      broken->close(true);
    }
  }, tls_);
  HttpConn* conn = watch_;
  auto ended = std::make_shared<Ended>(std::move(on_end));
  conn->stream("/v3/watch", nlohmann::json{{"create_request", create_request}}.dump(),
               [on_message = std::move(on_message), ended, this, conn](std::string_view line) {
                 if (watch_ != conn) return;
                 nlohmann::json msg = nlohmann::json::parse(line, nullptr, false);
                 if (msg.is_discarded() || !msg.is_object()) return;
                 if (msg.contains("error")) {
                   // The gateway reports a broken stream as a message, then ends it.
                   std::string why = str_field(msg["error"], "message");
                   if (why.empty()) why = "watch error: " + msg["error"].dump();
                   watch_ = nullptr;
                   conn->close(true);
                   if (*ended) (*ended)(why);
                   return;
                 }
                 if (msg.contains("result")) on_message(msg["result"]);
               },
               [ended, this, conn](int status, std::string body, const std::string& err) {
                 if (watch_ == conn) {
                   watch_ = nullptr;
                   conn->close(true);
                 }
                 std::string why = !err.empty() ? err : "watch stream ended (HTTP " + std::to_string(status) + (body.empty() ? "" : ": " + body.substr(0, 200)) + ")";
                 if (*ended) (*ended)(why);
               },
               // gRPC metadata through the gateway: the member ends the watch ("no leader") when it
               // loses its leader, instead of keeping it open and silent (clientv3's WithRequireLeader).
               "Grpc-Metadata-hasleader: true\r\n");
}

void Client::cancel_watch() {
  if (!watch_) return;
  HttpConn* c = std::exchange(watch_, nullptr);
  c->close(true);
}

}  // namespace sy::registry::etcd

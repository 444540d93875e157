// TlsState: building the set, the file poll.
#include "proxy/tls_state.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

#include "proxy/net/log.h"

namespace sy {

namespace {
constexpr size_t kAdminSlot = 100000;  // keys_ index of the admin listener (after any listen index)
}

TlsState::TlsState(uv_loop_t* loop, Hooks hooks) : hooks_(std::move(hooks)) {
  uv_timer_init(loop, &poll_);
  poll_.data = this;
  open_ = true;
}

TlsState::~TlsState() = default;

void TlsState::close() {
  if (!open_) return;
  open_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), nullptr);
}

std::shared_ptr<net::TicketKeys> TlsState::keys_for(size_t slot) {
  // Ticket keys belong to the listener, not to one build: a reload or a renewed certificate does
  // not end the sessions clients hold.
  const size_t i = slot == kAdminSlot ? 0 : slot + 1;
  if (keys_.size() <= i) keys_.resize(i + 1);
  if (!keys_[i]) keys_[i] = std::make_shared<net::TicketKeys>();
  return keys_[i];
}

bool TlsState::load(std::shared_ptr<const conf::Config> c, net::TlsProblems& p) {
  const size_t before = p.errors.size();
  auto next = std::make_shared<net::TlsContexts>();
  struct Label {
    std::shared_ptr<net::TlsServerConfig> cfg;
    std::string label;
  };
  std::vector<Label> built;
  for (size_t i = 0; i < c->listen_tls.size(); ++i) {
    const auto& t = c->listen_tls[i];
    if (!t.enabled) {
      next->listeners.push_back(nullptr);
      continue;
    }
    auto s = net::build_server_tls(t, c->path, keys_for(i), p);
    if (s) built.push_back({s, c->listen[i].text});
    next->listeners.push_back(s);
  }
  if (c->admin.tls.enabled) {
    auto s = net::build_server_tls(c->admin.tls, c->path, keys_for(kAdminSlot), p);
    if (s) built.push_back({s, "admin"});
    next->admin = s;
  }
  for (const auto& [name, svc] : c->services) {
    if (!svc.tls.enabled && svc.tls.pos.line == 0) continue;  // no block written
    if (auto t = net::build_client_tls(svc.tls, c->path, p)) next->services[name] = t;
  }
  // Always built: any registration may say "scheme": "https". (It names no file, so cannot fail
  // on one; the system bundle is read here, once per load, not per connection.)
  net::TlsProblems ignored;
  next->instance_default = net::build_client_tls(conf::ClientTls{}, c->path, ignored);
  if (c->registry.etcd.tls.enabled) next->etcd = net::build_client_tls(c->registry.etcd.tls, c->path, p);
  if (p.errors.size() != before) return false;
  for (auto& b : built) {
    b.cfg->label = b.label;
    if (hooks_.stats) b.cfg->stats = hooks_.stats(b.label);
    if (hooks_.expiry)
      for (const auto& cert : b.cfg->certs.all())
        hooks_.expiry(b.label, cert.names.empty() ? cert.cert_path : cert.names.front(), cert.not_after);
  }
  cfg_ = std::move(c);
  current_ = std::move(next);
  files_ = net::tls_files(*cfg_);
  std::sort(files_.begin(), files_.end());
  files_.erase(std::unique(files_.begin(), files_.end()), files_.end());
  seen_ = signatures();
  settling_ = false;
  if (files_.empty()) uv_timer_stop(&poll_);
  else if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&poll_))) uv_timer_start(&poll_, on_poll, kPollMs, kPollMs);
  return true;
}

std::map<std::string, TlsState::Signature> TlsState::signatures() const {
  std::map<std::string, Signature> out;
  for (const auto& f : files_) {
    struct stat st{};
    if (::stat(f.c_str(), &st) != 0) {
      out[f] = Signature{0, 0, 0, 0, errno};
      continue;
    }
    out[f] = Signature{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), static_cast<int64_t>(st.st_size),
                       static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec, 0};
  }
  return out;
}

void TlsState::on_poll(uv_timer_t* t) {
  auto* self = static_cast<TlsState*>(t->data);
  auto now = self->signatures();
  if (now != self->seen_) {
    self->seen_ = std::move(now);
    self->settling_ = true;  // read it once it stops changing
    return;
  }
  if (!self->settling_) return;
  self->settling_ = false;
  net::TlsProblems p;
  if (!self->load(self->cfg_, p)) {
    std::string all;
    for (const auto& e : p.errors) all += "\n  " + e;
    log::error("TLS files changed but did not load; the certificates in use stay:" + all);
    if (self->hooks_.reload_failed) self->hooks_.reload_failed();
    return;
  }
  for (const auto& w : p.warnings) log::warn(w);
  log::info("TLS files changed on disk: certificates reloaded (new handshakes use them; open connections keep theirs)");
  if (self->hooks_.changed) self->hooks_.changed();
}

}  // namespace sy

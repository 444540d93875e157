// The TLS contexts in force (docs/configuration.md, "TLS"): built from the config at start-up and
// on every reload, and again when a certificate, key or CA file changes on disk — renamed into
// place (certbot, a Kubernetes secret's symlink swap) or edited in place. Files are watched by
// their stat (device, inode, size, mtime, following symlinks) every kPollMs: a handful of stat
// calls, whatever changed them, and a file caught mid-write is read only once it has stayed the
// same for one more poll (so a change is live within 2 × kPollMs). A rebuild that fails keeps
// every old context and is logged with the path and OpenSSL's reason. Main loop only.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "conf/config.h"
#include "proxy/net/tls_config.h"

namespace sy {

class TlsState {
 public:
  static constexpr uint64_t kPollMs = 500;
  struct Hooks {
    // The metrics' handshake counters for a listener label ("admin", or a listen address).
    std::function<const void*(const std::string& label)> stats;
    // A loaded certificate's notAfter, for the expiry gauge.
    std::function<void(const std::string& label, const std::string& name, int64_t not_after)> expiry;
    std::function<void()> reload_failed;  // switchyard_tls_reload_failures_total
    std::function<void()> changed;        // publish the new contexts
  };
  TlsState(uv_loop_t* loop, Hooks hooks);
  ~TlsState();
  TlsState(const TlsState&) = delete;
  TlsState& operator=(const TlsState&) = delete;

  // Builds every context `c` names. false: `p` says why, and nothing changed.
  bool load(std::shared_ptr<const conf::Config> c, net::TlsProblems& p);
  const std::shared_ptr<const net::TlsContexts>& current() const { return current_; }
  void close();

 private:
  using Signature = std::tuple<uint64_t, uint64_t, int64_t, int64_t, int>;  // dev, ino, size, mtime ns, errno
  static void on_poll(uv_timer_t* t);
  std::map<std::string, Signature> signatures() const;
  std::shared_ptr<net::TicketKeys> keys_for(size_t slot);

  uv_timer_t poll_{};
  Hooks hooks_;
  std::shared_ptr<const conf::Config> cfg_;
  std::shared_ptr<const net::TlsContexts> current_;
  std::vector<std::shared_ptr<net::TicketKeys>> keys_;  // by listen index; the last slot is admin's
  std::vector<std::string> files_;
  std::map<std::string, Signature> seen_;
  bool settling_ = false;  // a change was seen; rebuild when the next poll sees the same
  bool open_ = false;
};

}  // namespace sy

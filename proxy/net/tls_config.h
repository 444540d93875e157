// TLS contexts built from the config (docs/configuration.md, "TLS"): a listener's certificates and
// settings (TlsServerConfig), a client context to instances or etcd (TlsClientConfig), and the
// session-ticket keys a listener keeps across reloads. Every certificate, key and CA bundle is read
// here, once per load: start-up, --check, SIGHUP / POST /v1/reload and a certificate file changing
// on disk all come through these functions, so each reports the same problems at the same
// FILE:LINE:COL. Runs on the main loop; what it returns is shared read-only by the workers.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "conf/config.h"
#include "proxy/net/tls_certs.h"
#include "proxy/net/tls_session.h"

namespace sy::net {

// Session-ticket keys (RFC 5077 tickets, TLS 1.3 resumption PSKs) of one listener: made at
// start-up from the system's random source, rotated every `kRotateSeconds` (the previous key still
// decrypts, and a ticket under it is renewed), never written anywhere: a restart makes new keys.
class TicketKeys {
 public:
  static constexpr int64_t kRotateSeconds = 12 * 3600;
  TicketKeys();
  void install(SSL_CTX* ctx);  // on each certificate's context
  uint64_t rotations() const;

 private:
  struct Key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    int64_t created = 0;
  };
  static int callback(SSL* s, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* c, EVP_MAC_CTX* h, int enc);
  void fresh(Key& k, int64_t now);
  // Handshakes on several workers meet here: a lock held for a copy of 80 bytes, once per full
  // handshake or resumption, never per request.
  mutable std::mutex mu_;
  Key current_{}, previous_{};
  bool have_previous_ = false;
  uint64_t rotations_ = 0;
};

struct TlsClientConfig {
  SslCtxPtr ctx;
  bool verify = true;
  std::string server_name;  // "" = the request's Host (or the peer's address)
};

// Every TLS context in force, as one immutable set: published with the routing snapshot, so a
// reload or a renewed certificate reaches every worker with the same atomic load as the routes.
// Connections hold the part they use (a handshake under way keeps its listener's certificates).
struct TlsContexts {
  std::vector<std::shared_ptr<const TlsServerConfig>> listeners;  // by `listen` index; null = plain
  std::shared_ptr<const TlsServerConfig> admin;                   // null = plain
  // services.X.tls, for every service that writes the block (with enabled: false too: then it
  // only says how instances registered over TLS are verified).
  std::unordered_map<std::string, std::shared_ptr<const TlsClientConfig>> services;
  std::shared_ptr<const TlsClientConfig> etcd;
  // For an instance registered over TLS ("scheme": "https", an https:// catalog URL, a Eureka
  // securePort) whose service has no tls block: the system's CA bundle, names verified.
  std::shared_ptr<const TlsClientConfig> instance_default;

  // What an instance of `service` is reached with when TLS is wanted (services.X.tls enabled, or
  // the instance registered over TLS): the service's block when it wrote one, else — for an
  // instance that asked for TLS itself — instance_default. null: plain, or TLS wanted and no
  // context loaded (no connection then).
  std::shared_ptr<const TlsClientConfig> for_instance(const std::string& service, bool service_tls, bool instance_tls) const {
    if (!service_tls && !instance_tls) return nullptr;
    auto it = services.find(service);
    if (it != services.end()) return it->second;
    return service_tls ? nullptr : instance_default;
  }
};

// Problems as "FILE:LINE:COL: message", FILE being the config file; `warnings` likewise (an
// expired certificate loads, with a warning: renewing it is the fix, not refusing to start).
struct TlsProblems {
  std::vector<std::string> errors, warnings;
};

// A listener's TLS. nullptr when something in it did not load (`p.errors` says what).
std::shared_ptr<TlsServerConfig> build_server_tls(const conf::ListenerTls& t, const std::string& file,
                                                  std::shared_ptr<TicketKeys> keys, TlsProblems& p);
// A client context (services.X.tls, registry.etcd.tls). nullptr on a problem.
std::shared_ptr<TlsClientConfig> build_client_tls(const conf::ClientTls& t, const std::string& file, TlsProblems& p);

// Everything a config names, loaded and dropped: what --check and a reload's validation run.
void check_tls(const conf::Config& c, TlsProblems& p);

// Every certificate, key and CA file a config names (the file watcher's list).
std::vector<std::string> tls_files(const conf::Config& c);

}  // namespace sy::net

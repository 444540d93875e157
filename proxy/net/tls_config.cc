// Building TLS contexts from the config, with the config's positions in every message; the
// session-ticket key ring.
#include "proxy/net/tls_config.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cstring>
#include <ctime>
#include <sstream>

namespace sy::net {

namespace {

std::string at(const std::string& file, conf::Pos pos, const std::string& msg) {
  std::ostringstream o;
  o << file << ":" << (pos.line ? pos.line : 1) << ":" << (pos.line ? pos.col : 1) << ": " << msg;
  return o.str();
}

// A file that is not there is said plainly (OpenSSL's reason would be "system library").
bool readable(const conf::FileRef& f, const char* what, const std::string& file, TlsProblems& p) {
  struct stat st{};
  if (::stat(f.path.c_str(), &st) != 0) {
    p.errors.push_back(at(file, f.pos, std::string(what) + " file " + f.path + ": " + std::strerror(errno)));
    return false;
  }
  return true;
}

int ticket_index() {
  static const int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

}  // namespace

// ---- ticket keys ----

TicketKeys::TicketKeys() { fresh(current_, static_cast<int64_t>(std::time(nullptr))); }

void TicketKeys::fresh(Key& k, int64_t now) {
  RAND_bytes(k.name, sizeof k.name);
  RAND_bytes(k.aes, sizeof k.aes);
  RAND_bytes(k.hmac, sizeof k.hmac);
  k.created = now;
}

uint64_t TicketKeys::rotations() const {
  std::lock_guard<std::mutex> g(mu_);
  return rotations_;
}

void TicketKeys::install(SSL_CTX* ctx) {
  SSL_CTX_set_ex_data(ctx, ticket_index(), this);
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, callback);
}

int TicketKeys::callback(SSL* s, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* c, EVP_MAC_CTX* h, int enc) {
  // The context that made the session holds the ring (every certificate's context points at the
  // same one, so a switch by SNI changes nothing).
  auto* self = static_cast<TicketKeys*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ticket_index()));
  if (!self) return 0;
  Key k{};
  int rc = 1;
  {
    std::lock_guard<std::mutex> g(self->mu_);
    if (enc) {
      const int64_t now = static_cast<int64_t>(std::time(nullptr));
      if (now - self->current_.created >= kRotateSeconds) {  // rotation rides on the next ticket issued
        self->previous_ = self->current_;
        self->have_previous_ = true;
        self->fresh(self->current_, now);
        ++self->rotations_;
      }
      k = self->current_;
    } else if (std::memcmp(name, self->current_.name, 16) == 0) {
      k = self->current_;
    } else if (self->have_previous_ && std::memcmp(name, self->previous_.name, 16) == 0) {
      k = self->previous_;
      rc = 2;  // valid, but issue a ticket under the current key
    } else {
      return 0;  // unknown (older than the ring, or another process's): a full handshake
    }
  }
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_end()};
  if (enc) {
    std::memcpy(name, k.name, 16);
    if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
    if (EVP_EncryptInit_ex(c, EVP_aes_256_cbc(), nullptr, k.aes, iv) != 1) return -1;
  } else if (EVP_DecryptInit_ex(c, EVP_aes_256_cbc(), nullptr, k.aes, iv) != 1) {
    return -1;
  }
  if (EVP_MAC_CTX_set_params(h, params) != 1) return -1;
  return rc;
}

// ---- listeners ----

std::shared_ptr<TlsServerConfig> build_server_tls(const conf::ListenerTls& t, const std::string& file,
                                                  std::shared_ptr<TicketKeys> keys, TlsProblems& p) {
  const size_t before = p.errors.size();
  auto cfg = std::make_shared<TlsServerConfig>();
  TlsPolicy policy;
  policy.min_version = t.min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION;
  policy.ciphers = t.ciphers;
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  for (const auto& c : t.certificates) {
    if (!readable(c.cert, "certificate", file, p)) continue;
    if (!c.key.empty() && !readable(c.key, "key", file, p)) continue;
    std::string err;
    if (!cfg->certs.add(c.cert.path, c.key.path, policy, err)) {
      p.errors.push_back(at(file, err.rfind("key ", 0) == 0 && !c.key.empty() ? c.key.pos : c.cert.pos, err));
      continue;
    }
    const TlsCertificate& loaded = cfg->certs.all().back();
    if (loaded.not_after > 0 && loaded.not_after < now)
      p.warnings.push_back(at(file, c.cert.pos, "certificate " + c.cert.path + " expired (notAfter " +
                                                    std::to_string(loaded.not_after) + " in unix time): clients will refuse it"));
  }
  STACK_OF(X509_NAME)* ca_names = nullptr;
  if (t.client_auth != conf::ListenerTls::ClientAuth::kNone && readable(t.client_ca, "client_ca", file, p)) {
    ERR_clear_error();
    ca_names = SSL_load_client_CA_file(t.client_ca.path.c_str());
    if (!ca_names) p.errors.push_back(at(file, t.client_ca.pos, "client_ca " + t.client_ca.path + " does not load: " + openssl_reason()));
  }
  if (p.errors.size() != before) {
    if (ca_names) sk_X509_NAME_pop_free(ca_names, X509_NAME_free);
    return nullptr;
  }
  static const unsigned char kSidCtx[] = "switchyard";
  for (const auto& c : cfg->certs.all()) {
    SSL_CTX* ctx = c.ctx.get();
    // One session id context for every certificate: a session made under one SNI choice resumes
    // under the same choice (OpenSSL checks the rest).
    SSL_CTX_set_session_id_context(ctx, kSidCtx, sizeof kSidCtx - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, 20480);
    SSL_CTX_set_timeout(ctx, 7200);
    if (t.session_tickets) {
      if (keys) keys->install(ctx);
    } else {
      SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    if (t.client_auth != conf::ListenerTls::ClientAuth::kNone) {
      SSL_CTX_load_verify_locations(ctx, t.client_ca.path.c_str(), nullptr);
      SSL_CTX_set_client_CA_list(ctx, SSL_dup_CA_list(ca_names));
      SSL_CTX_set_verify(ctx,
                         SSL_VERIFY_PEER | (t.client_auth == conf::ListenerTls::ClientAuth::kRequired ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                         nullptr);
    }
  }
  if (ca_names) sk_X509_NAME_pop_free(ca_names, X509_NAME_free);
  cfg->strict_sni = t.strict_sni;
  cfg->alpn = t.alpn;
  cfg->client_cert = t.client_auth != conf::ListenerTls::ClientAuth::kNone;
  cfg->tickets = std::move(keys);
  cfg->arm();
  return cfg;
}

// ---- clients ----

std::shared_ptr<TlsClientConfig> build_client_tls(const conf::ClientTls& t, const std::string& file, TlsProblems& p) {
  const size_t before = p.errors.size();
  ERR_clear_error();
  auto out = std::make_shared<TlsClientConfig>();
  out->ctx.reset(SSL_CTX_new(TLS_client_method()));
  SSL_CTX* ctx = out->ctx.get();
  if (!ctx) {
    p.errors.push_back(at(file, t.pos, "cannot create a TLS context: " + openssl_reason()));
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_cipher_list(ctx, kIntermediateCiphers);
  static const unsigned char kAlpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof kAlpn - 1);
  if (t.verify) {
    if (t.ca.empty()) {
      SSL_CTX_set_default_verify_paths(ctx);
    } else if (readable(t.ca, "ca", file, p) && SSL_CTX_load_verify_locations(ctx, t.ca.path.c_str(), nullptr) != 1) {
      p.errors.push_back(at(file, t.ca.pos, "ca " + t.ca.path + " does not load: " + openssl_reason()));
    }
  }
  if (!t.cert.empty() && readable(t.cert, "cert", file, p) && (t.key.empty() || readable(t.key, "key", file, p))) {
    const std::string& key = t.key.empty() ? t.cert.path : t.key.path;
    if (SSL_CTX_use_certificate_chain_file(ctx, t.cert.path.c_str()) != 1) {
      p.errors.push_back(at(file, t.cert.pos, "certificate " + t.cert.path + " does not load: " + openssl_reason()));
    } else if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
      const bool mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
      const std::string why = mismatch ? "does not match certificate " + t.cert.path : "does not load: " + openssl_reason();
      ERR_clear_error();
      p.errors.push_back(at(file, t.key.empty() ? t.cert.pos : t.key.pos, "key " + key + " " + why));
    }
  }
  if (p.errors.size() != before) return nullptr;
  out->verify = t.verify;
  out->server_name = t.server_name;
  return out;
}

void check_tls(const conf::Config& c, TlsProblems& p) {
  for (const auto& t : c.listen_tls)
    if (t.enabled) build_server_tls(t, c.path, nullptr, p);
  if (c.admin.tls.enabled) build_server_tls(c.admin.tls, c.path, nullptr, p);
  for (const auto& [name, s] : c.services)
    if (s.tls.enabled || s.tls.pos.line > 0) build_client_tls(s.tls, c.path, p);
  if (c.registry.etcd.tls.enabled) build_client_tls(c.registry.etcd.tls, c.path, p);
}

std::vector<std::string> tls_files(const conf::Config& c) {
  std::vector<std::string> out;
  auto add = [&](const conf::FileRef& f) {
    if (!f.empty()) out.push_back(f.path);
  };
  auto listener = [&](const conf::ListenerTls& t) {
    if (!t.enabled) return;
    for (const auto& x : t.certificates) {
      add(x.cert);
      add(x.key);
    }
    add(t.client_ca);
  };
  for (const auto& t : c.listen_tls) listener(t);
  listener(c.admin.tls);
  auto client = [&](const conf::ClientTls& t) {
    if (!t.enabled) return;
    add(t.ca);
    add(t.cert);
    add(t.key);
  };
  for (const auto& [name, s] : c.services) client(s.tls);
  client(c.registry.etcd.tls);
  return out;
}

}  // namespace sy::net

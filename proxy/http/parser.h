// The proxy's one llhttp wrapper, used by its three HTTP/1.1 parsers (client requests in
// proxy/server, upstream responses in proxy/upstream, admin requests in proxy/admin): one set-up
// (init binds the owner for the callbacks) and one reading of llhttp's result, as {what happened,
// bytes used}, so each parser's loop says only what it does with it. llhttp is built in strict
// mode (meson.build): CRLF only, no control characters in fields.
#pragma once

#include <llhttp.h>

#include <cstddef>

namespace sy::http {

struct Fed {
  enum class Kind {
    kAll,      // every byte parsed; the message may go on in the next bytes
    kPaused,   // a callback paused the parser (already resumed): `used` bytes are parsed
    kUpgrade,  // the message asked for an upgrade: the bytes after `used` belong to the new protocol
    kError,    // malformed, or a callback refused (see Parser::reason())
  };
  Kind kind;
  size_t used;
};

class Parser {
 public:
  void init(llhttp_type_t type, const llhttp_settings_t* settings, void* owner) {
    llhttp_init(&p_, type, settings);
    p_.data = owner;
  }

  Fed feed(const char* data, size_t n) {
    const llhttp_errno_t err = llhttp_execute(&p_, data, n);
    if (err == HPE_OK) return {Fed::Kind::kAll, n};
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
      const size_t used = static_cast<size_t>(llhttp_get_error_pos(&p_) - data);
      if (err == HPE_PAUSED_UPGRADE) return {Fed::Kind::kUpgrade, used};
      llhttp_resume(&p_);
      return {Fed::Kind::kPaused, used};
    }
    return {Fed::Kind::kError, 0};
  }

  // A message framed by the end of the connection (a response without length) ends with it.
  bool needs_eof() const { return llhttp_message_needs_eof(&p_) != 0; }
  void finish() { llhttp_finish(&p_); }
  bool keep_alive() const { return llhttp_should_keep_alive(&p_) != 0; }
  const char* reason() const { return llhttp_get_error_reason(&p_); }
  const llhttp_t& raw() const { return p_; }

 private:
  llhttp_t p_{};
};

}  // namespace sy::http

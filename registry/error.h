// The control plane's one error shape: every decoder, validator and refusal (the registration
// codec, the Consul and Eureka translators, AdminApi::admit) answers false and fills one of these;
// each API family turns it into its own answer (JSON {"error": code, "message"}, or Consul's text).
#pragma once

#include <string>

namespace sy::registry {

struct Error {
  int status = 400;      // the HTTP status it is answered with
  std::string code;      // machine-readable ("bad_field", "static_instance", ...)
  std::string message;   // a sentence naming what is wrong
};

}  // namespace sy::registry

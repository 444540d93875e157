// Eureka's REST API under /eureka/ and /eureka/v2/ on the admin listener (docs/consul-eureka.md):
// Eureka clients (eureka-js-client, Spring Cloud Netflix,
// Steeltoe) register, renew, go out of service and read the registry unchanged. An Eureka
// instance document (JSON, or XML turned into the same JSON) is translated into switchyard's
// registration document and admitted like any other (AdminApi::admit); reads render registry
// instances in Eureka's shapes, as JSON or XML by Accept. Runs on the main loop.
#pragma once

#include <string>

#include "proxy/admin/admin_api.h"

namespace sy::admin {

// An Eureka instance document (JSON {"instance": {...}}, or XML <instance>) as switchyard's
// registration, plus the status it reports (UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN).
struct EurekaRegistration {
  registry::Registration reg;
  std::string status;
};
// false: `error` says what is wrong (a 400).
bool decode_eureka_instance(const std::string& body, const std::string& content_type, const std::string& service,
                            EurekaRegistration& out, registry::Error& error);

class EurekaApi {
 public:
  explicit EurekaApi(AdminApi& api) : api_(api) {}

  // Eureka's rows in the endpoint table (the family owns /eureka/ and /eureka/v2/).
  void add_endpoints(EndpointTable& t);

 private:
  AdminResponse registration(const AdminRequest& req, const std::string& service);
  AdminResponse apps(const AdminRequest& req, bool delta);
  AdminApi& api_;
};

}  // namespace sy::admin

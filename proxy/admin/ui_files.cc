// The dashboard's built-in files.
#include "proxy/admin/ui_files.h"

#include "proxy/ui_assets.h"  // generated (proxy/meson.build)

namespace sy::admin {

namespace {

bool accepts_gzip(const std::string& accept_encoding) {
  // "gzip" as a coding, not refused with q=0 (what browsers send is "gzip, deflate, br").
  size_t at = accept_encoding.find("gzip");
  if (at == std::string::npos) return false;
  const std::string rest = accept_encoding.substr(at + 4, 8);
  return rest.rfind(";q=0", 0) != 0 || rest.rfind(";q=0.", 0) == 0;
}

}  // namespace

AdminResponse ui_file(const std::string& file, const AdminRequest& req) {
  const std::string name = file.empty() ? "index.html" : file;
  for (const auto& a : ui::kAssets) {
    if (a.name != name) continue;
    AdminResponse r;
    r.content_type = std::string(a.type);
    r.headers = {{"Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"},
                 {"X-Content-Type-Options", "nosniff"},
                 {"Referrer-Policy", "no-referrer"},
                 {"X-Frame-Options", "DENY"},
                 // Revalidated each time (the ETag makes that a 304): a new binary's page is seen at once.
                 {"Cache-Control", "no-cache"},
                 {"ETag", std::string(a.etag)},
                 {"Vary", "Accept-Encoding"}};
    if (req.header("if-none-match") == a.etag) {
      r.status = 304;
      return r;
    }
    if (accepts_gzip(req.header("accept-encoding")) && a.gzip.size() < a.body.size()) {
      r.headers.emplace_back("Content-Encoding", "gzip");
      r.body = std::string(a.gzip);
    } else {
      r.body = std::string(a.body);
    }
    return r;
  }
  AdminResponse r;
  r.status = 404;
  r.body = "{\"error\": \"not_found\", \"message\": \"no dashboard file " + name + "\"}\n";
  return r;
}

}  // namespace sy::admin

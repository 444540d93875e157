// GET /ui/{file}: the dashboard's page, built into the binary (proxy/admin/ui/, embedded by
// embed.py at build time). Served with a strict Content-Security-Policy (nothing from any other
// host, no inline script, no framing), an ETag answered with 304, and gzip to clients that take
// it. The page reads the admin API like any other client: the gate's token rules apply to it.
#pragma once

#include "proxy/admin/admin_conn.h"

namespace sy::admin {

// `file` as captured after /ui/ ("" = index.html). 404 for a name that is not built in.
AdminResponse ui_file(const std::string& file, const AdminRequest& req);

}  // namespace sy::admin

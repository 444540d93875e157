-- wrk script: PUT registrations to the admin API as fast as they are acknowledged.
-- Environment: SY_SERVICE (name prefix), SY_SERVICES (spread over that many services, "<prefix><k>";
-- 1 = the prefix alone), SY_IDS (ids cycle through 0..SY_IDS-1, re-registering after that),
-- SY_ADDRESS (the instance address registered), SY_FRESH (below).
local service = os.getenv("SY_SERVICE") or "bench"
local services = tonumber(os.getenv("SY_SERVICES") or "1")
local ids = tonumber(os.getenv("SY_IDS") or "1000")
local address = os.getenv("SY_ADDRESS") or "127.0.0.1:9"
local counter = 0
local body = '{"address": "' .. address .. '", "ttl": "24h"}'
-- SY_FRESH=1: every registration carries a new port (a real change, not the same document again).
local fresh = os.getenv("SY_FRESH") == "1"

function request()
  local n = counter % ids
  counter = counter + 1
  local svc = service
  if services > 1 then svc = service .. tostring(n % services) end
  local b = body
  if fresh then b = '{"address": "127.0.0.1:' .. tostring(2000 + counter % 1000) .. '", "ttl": "24h"}' end
  return wrk.format("PUT", "/v1/services/" .. svc .. "/instances/i" .. tostring(n),
                    {["Content-Type"] = "application/json", ["Host"] = "admin"}, b)
end

function response(status, headers, body)
  if status ~= 200 and status ~= 201 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
end

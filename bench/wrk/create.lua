-- PATCH power on a Rack no request has named before: one new task per request, no queueing.
-- Arguments: racks file (one external id a line, each used once), token, other org's token,
-- site id. One wrk thread: the requests take the racks in the file's order.
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")

local next_rack = 0

function init(args)
  load_args(args)
  body = string.format('{"siteId": "%s", "state": "On"}', site)
  headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}
end

function request()
  next_rack = next_rack + 1
  -- Past the file's end a rack is named again (its task queues): the driver checks the count.
  local rack = ids[(next_rack - 1) % #ids + 1]
  return wrk.format("PATCH", "/v2/org/acme-inc/nico/rack/" .. rack .. "/power", headers, body)
end

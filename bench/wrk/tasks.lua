-- GET a random existing task; 5% ask for an unknown task (404), 5% come from another org (403).
-- Arguments: ids file, token, other org's token, site id.
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")

function init(args)
  load_args(args)
end

function request()
  local roll = math.random(100)
  local id = ids[math.random(#ids)]
  local auth = token
  if roll <= 5 then
    id = string.format("%08x-0000-4000-8000-%012x", math.random(0, 2147483647), math.random(0, 2147483647))
  elseif roll <= 10 then
    auth = other_token
  end
  return wrk.format("GET", "/v2/org/acme-inc/nico/task/" .. id .. "?siteId=" .. site,
                    {["Authorization"] = "Bearer " .. auth})
end

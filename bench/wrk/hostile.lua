-- A mixed load of good, malformed and hostile requests: nothing may answer 5xx.
-- Arguments: ids file, token, other org's token, site id.
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")

function init(args)
  load_args(args)
  local header, payload = token:match("^([^.]+)%.([^.]+)%.")
  forged = header .. "." .. payload .. ".c2lnbmF0dXJl"
  none = "eyJhbGciOiJub25lIn0." .. payload .. "."
  huge = string.rep("A", 20000)
end

local function get(path, headers)
  return wrk.format("GET", path, headers)
end

function request()
  local id = ids[math.random(#ids)]
  local good = "/v2/org/acme-inc/nico/task/" .. id .. "?siteId=" .. site
  local pick = math.random(14)
  if pick == 1 then return get(good, {["Authorization"] = "Bearer " .. token})
  elseif pick == 2 then return get(good, {})
  elseif pick == 3 then return get(good, {["Authorization"] = "Bearer " .. forged})
  elseif pick == 4 then return get(good, {["Authorization"] = "Bearer " .. none})
  elseif pick == 5 then return get(good, {["Authorization"] = "Basic dXNlcjpwYXNz"})
  elseif pick == 6 then return get(good, {["Authorization"] = "Bearer " .. huge})
  elseif pick == 7 then return get("/v2/org/acme-inc/nico/task/not-a-uuid?siteId=" .. site,
                                    {["Authorization"] = "Bearer " .. token})
  elseif pick == 8 then return get("/v2/org/acme-inc/nico/task/" .. id .. "?siteId=%ff%fe",
                                    {["Authorization"] = "Bearer " .. token})
  elseif pick == 9 then return get(good .. "&pageSize=1000", {["Authorization"] = "Bearer " .. token})
  elseif pick == 10 then return get("/v2/org/%00%0a/nico/task/" .. id .. "?siteId=" .. site,
                                     {["Authorization"] = "Bearer " .. token})
  elseif pick == 11 then return wrk.format("POST", good, {["Authorization"] = "Bearer " .. token}, "{}")
  elseif pick == 12 then return get("/../../etc/passwd", {})
  elseif pick == 13 then return get(good, {["Authorization"] = "Bearer " .. other_token})
  else return get("/v2/org/acme-inc/nico/task/" .. id, {["Authorization"] = "Bearer " .. token})
  end
end

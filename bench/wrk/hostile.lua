-- A mixed load of good, malformed and hostile requests: nothing may answer 5xx.
-- Arguments: ids file, token, other org's token, site id.
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + seed)
  ids = {}
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
  token, other_token, site = args[2], args[3], args[4]
  statuses = {}
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

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(totals) do parts[#parts + 1] = string.format('"%d": %d', status, n) end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_s": %.3f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, '
    .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")))
end

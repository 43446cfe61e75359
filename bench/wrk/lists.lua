-- GET one of the first five pages (20 tasks each) of the site's task list, newest first;
-- half of the requests list only active tasks.
-- Arguments: ids file, token, other org's token, site id.
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")

function init(args)
  load_args(args)
end

function request()
  local active = math.random(2) == 1 and "true" or "false"
  return wrk.format("GET", "/v2/org/acme-inc/nico/task?siteId=" .. site .. "&pageSize=20&pageNumber="
                    .. math.random(5) .. "&activeOnly=" .. active,
                    {["Authorization"] = "Bearer " .. token})
end

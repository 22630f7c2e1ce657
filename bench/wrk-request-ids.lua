-- wrk script for measuring the simulator: every request carries its own MS-RequestId, as
-- pcsync sends them. Prepend `token = "<access token>"` (see README, "The Partner Center simulator").
counter = 0
request = function()
  counter = counter + 1
  local id = string.format("%08x-0000-4000-8000-%012x", math.random(0, 0x7fffffff), counter)
  return wrk.format("GET", nil, {["MS-RequestId"] = id, ["Authorization"] = "Bearer " .. token})
end

-- wrk script: acks spread over 10,000 users x 100 channels with rising message ids.
-- wrk -t2 -c64 -d10s -s scripts/load/ack.lua http://127.0.0.1:8080
local counter = 0
request = function()
  counter = counter + 1
  local user = math.random(1, 10000)
  local channel = math.random(1, 100)
  local path = "/v1/users/" .. user .. "/channels/" .. channel .. "/ack"
  local body = '{"message_id": ' .. counter .. '}'
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
end

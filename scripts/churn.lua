-- wrk script: acquire+release churn against a ratekeeper server.
-- Each thread keeps the lease ids it was granted and releases one before
-- asking for another, so acquires and releases stay paired.
-- Usage: wrk -t2 -c64 -d10s -s scripts/churn.lua http://127.0.0.1:7171
-- (create the limit first: ratekeeper limit create churn --slots 1000)
local leases = {}
local acquire = wrk.format("POST", "/v1/acquire",
  { ["Content-Type"] = "application/json" }, '{"names":["churn"]}')

request = function()
  local lease = table.remove(leases)
  if lease then
    return wrk.format("DELETE", "/v1/leases/" .. lease)
  end
  return acquire
end

response = function(status, headers, body)
  local lease = body:match('"lease_id":"(%x+)"')
  if lease then
    table.insert(leases, lease)
  end
end

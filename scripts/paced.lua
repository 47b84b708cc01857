-- wrk script: rate-limited acquires that all wait their turn.
-- Each connection asks again as soon as it is admitted, so with more
-- connections than the rate admits at once, every admission waits.
-- Usage: wrk -t2 -c64 -d5s -s scripts/paced.lua http://127.0.0.1:7171
-- (create the limit first: ratekeeper limit create paced --slots 1 --decay 1000)
local acquire = wrk.format("POST", "/v1/acquire",
  { ["Content-Type"] = "application/json" }, '{"names":["paced"],"mode":"rate_limit"}')

request = function()
  return acquire
end

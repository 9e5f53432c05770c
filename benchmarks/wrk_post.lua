-- wrk script for benchmarks/gateway_overhead.sh: POSTs one JSON body, optionally with a bearer key, and prints
-- one JSON line of results when done (latency percentiles in microseconds, requests, non-2xx and socket errors).
--   WRK_PATH=/v1/chat/completions WRK_BODY='{...}' WRK_KEY=sk-... wrk -t1 -c64 -d5s -s benchmarks/wrk_post.lua URL
wrk.method = "POST"
wrk.path = os.getenv("WRK_PATH") or "/v1/chat/completions"
wrk.body = os.getenv("WRK_BODY") or '{"model":"mock","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("WRK_KEY")
if key ~= nil and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.status, e.connect + e.read + e.write + e.timeout))
end

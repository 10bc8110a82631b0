-- wrk_report.lua: prints one machine-readable line when wrk is done:
--   WRKJSON {"rps":..., "p50_us":..., "p99_us":..., "err_*":...}
-- WRK_BODY_BYTES=N in the environment makes wrk POST an N-byte body.
local size = tonumber(os.getenv("WRK_BODY_BYTES") or "0") or 0
if size > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("b", size)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"rps":%.1f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,' ..
    '"max_us":%.0f,"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,' ..
    '"err_timeout":%d}\n',
    summary.requests, summary.requests / seconds, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end

-- wrk script shared by every case of bench/serve.sh; configured through the environment so
-- that both servers get exactly the same load.
--
--   BENCH_INM=ETAG        send If-None-Match: ETAG (the 304 case)
--   BENCH_CLOSE=1         send Connection: close (a new TCP connection per request)
--   BENCH_PATHS=FILE      rotate over the paths in FILE, one per line (the mix case)
--   BENCH_REPORT_MACS=F   POST a report to v1/{mac}/report, rotating over the MACs in F
--
-- Without BENCH_PATHS / BENCH_REPORT_MACS no `request` function is defined, so wrk sends
-- one pre-built request (its fastest mode) to the URL on its command line.
-- `done` prints one machine-readable line that serve.sh parses:
--   BENCH requests=N rps=R p50_us=A p99_us=B mbps=M non2xx3xx=S sockerr=E

local inm = os.getenv("BENCH_INM")
if inm and inm ~= "" then
   wrk.headers["If-None-Match"] = inm
end
if os.getenv("BENCH_CLOSE") == "1" then
   wrk.headers["Connection"] = "close"
end

local function lines(file)
   local out = {}
   for line in io.lines(file) do
      if line ~= "" then out[#out + 1] = line end
   end
   return out
end

local paths_file = os.getenv("BENCH_PATHS")
local macs_file = os.getenv("BENCH_REPORT_MACS")
if (paths_file and paths_file ~= "") or (macs_file and macs_file ~= "") then
   local reqs, i = {}, 0
   local thread_no = 0

   function setup(thread)
      thread:set("thread_no", thread_no)
      thread_no = thread_no + 1
   end

   function init(args)
      if paths_file and paths_file ~= "" then
         for _, p in ipairs(lines(paths_file)) do
            reqs[#reqs + 1] = wrk.format("GET", p)
         end
      else
         local body = '{"event":"boot","generation":1,"config":"primary",' ..
            '"modules":{"mqttclass":"2"},"flags":{"reboots":0},"error":null,' ..
            '"mem_free":21344,"micropython":"1.24.1","mpy":2822}'
         local headers = { ["Content-Type"] = "application/json" }
         for _, mac in ipairs(lines(macs_file)) do
            reqs[#reqs + 1] = wrk.format("POST", "/v1/" .. mac .. "/report", headers, body)
         end
      end
      -- Threads start at different places in the rotation.
      i = (tonumber(thread_no) or 0) * 17 % #reqs
   end

   function request()
      i = i % #reqs + 1
      return reqs[i]
   end
end

function done(summary, latency, requests)
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d rps=%.0f p50_us=%d p99_us=%d mbps=%.1f non2xx3xx=%d sockerr=%d\n",
      summary.requests, summary.requests / secs,
      latency:percentile(50), latency:percentile(99),
      summary.bytes / secs / 1e6, e.status,
      e.connect + e.read + e.write + e.timeout))
end

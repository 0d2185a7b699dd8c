-- Replays pre-built, pre-signed HTTP requests. Thread i walks requests-<i>.bin (in the
-- directory named by $BENCH_REQUESTS_DIR) strictly in order, so after the run the first
-- `sent` records of its file are exactly the requests it may have sent. (wrk calls request()
-- once on thread 0 to validate it before the run; that record counts as sent but never goes
-- out, which keeps every bound the Python side derives from `sent` sound.)
-- Each record: "<byte length> <event count>\n" followed by the raw request bytes.

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

-- Records are read from the file as they are sent, not loaded up front: a sustained run's
-- file can outgrow what LuaJIT may allocate (about 1.8 GB at 4,700 req/s for 300 s).
function init(args)
   local path = os.getenv("BENCH_REQUESTS_DIR") .. "/requests-" .. tid .. ".bin"
   file = assert(io.open(path, "rb"))
   counts = {}
   local n = 0
   while true do
      local head = file:read("*l")
      if not head then break end
      local len, events = head:match("^(%d+) (%d+)$")
      n = n + 1
      counts[n] = tonumber(events)
      file:seek("cur", tonumber(len))
   end
   file:seek("set", 0)
   total = n
   io.stderr:write("BENCH_READY " .. tid .. " " .. n .. "\n")
   -- counters read back by done(): requests generated, their events, laps over the file,
   -- 200 responses, other responses, events the service says it took (stored + duplicates)
   sent, sent_events, laps, ok, other, acked, dups = 0, 0, 0, 0, 0, 0, 0
end

function request()
   local i = sent % total + 1
   if i == 1 and sent > 0 then
      laps = laps + 1
      file:seek("set", 0)
   end
   sent = sent + 1
   sent_events = sent_events + counts[i]
   local len = tonumber(file:read("*l"):match("^(%d+) "))
   return file:read(len)
end

function response(status, headers, body)
   if status ~= 200 then
      other = other + 1
      return
   end
   ok = ok + 1
   -- kapso-sink answers {"stored":N,"duplicates":M}; the bare handler {"ok":true}
   local stored = body:match('"stored":%s*(%d+)')
   if stored then
      local dup = tonumber(body:match('"duplicates":%s*(%d+)') or 0)
      acked = acked + tonumber(stored) + dup
      dups = dups + dup
   end
end

function done(summary, latency, requests)
   local per_thread = {}
   for _, t in ipairs(threads) do
      per_thread[#per_thread + 1] = string.format(
         '{"tid":%d,"total":%d,"sent":%d,"sent_events":%d,"laps":%d,"ok":%d,"other":%d,' ..
         '"acked":%d,"duplicates":%d}',
         t:get("tid"), t:get("total"), t:get("sent"), t:get("sent_events"), t:get("laps"),
         t:get("ok"), t:get("other"), t:get("acked"), t:get("dups"))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"duration_us":%d,"requests":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},"threads":[%s]}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean, table.concat(per_thread, ",")))
end

-- with BENCH_DELAY_MS set, each connection waits about that long between requests (sustained
-- scenario). The pause is drawn from 0.5x..1.5x so connections drift apart rather than firing
-- in step, which would turn a fixed rate into bursts.
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause then
   math.randomseed(os.time())
   function delay()
      return math.floor(pause * (0.5 + math.random()))
   end
end

-- wrk script: every request asks for a URL never asked before (the "miss" scenario).
--   BENCH_PATH  the object's path, e.g. /static/1k (the origin ignores the query)
--   BENCH_TAG   unique per run, so a later round or another server misses too
-- The URL is BENCH_PATH?bench=<tag>-<thread>-<n>. No response() callback:
-- defining one makes wrk parse every response in Lua and slows the client.
local path = os.getenv("BENCH_PATH") or "/static/1k"
local tag = os.getenv("BENCH_TAG") or tostring(os.time())
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local n = 0
function request()
  n = n + 1
  return wrk.format("GET", path .. "?bench=" .. tag .. "-" .. tostring(tid) .. "-" .. n)
end

-- wrk script: cycle through BENCH_KEYS stored URLs, BENCH_PATH?k=0 .. k=N-1 (the
-- "revalidate" scenario). With many more URLs than connections, no two requests
-- in flight ask for the same URL, so a proxy that collapses concurrent
-- revalidations of one key still sends one conditional request per request.
local path = os.getenv("BENCH_PATH") or "/reval/1k"
local keys = tonumber(os.getenv("BENCH_KEYS") or "1000")
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local n = 0
function request()
  n = n + 1
  local k = (n + (tid or 1) * 7919) % keys
  return wrk.format("GET", path .. "?k=" .. k)
end

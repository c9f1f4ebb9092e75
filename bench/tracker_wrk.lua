-- wrk script for bench/tracker_announce.py: compact announces with random
-- info hashes and peer ids drawn from fixed pools, so torrents fill up to a
-- realistic size instead of hitting the tracker's torrent cap.
-- Info hashes: one 40-hex line each in the file named by WRK_HASHES (the
-- bench writes it; it doubles as opentracker's whitelist).  Peer ids: PEERS
-- per run (env WRK_PEERS, default 50).

local PEERS = tonumber(os.getenv("WRK_PEERS") or "50")
local hashes, ids = {}, {}

local function urlbytes(n)
  local t = {}
  for i = 1, n do t[i] = string.format("%%%02X", math.random(0, 255)) end
  return table.concat(t)
end

function init(args)
  -- Same pools in every thread (fixed seed), different request order.
  math.randomseed(42)
  for line in io.lines(os.getenv("WRK_HASHES")) do
    hashes[#hashes + 1] = line:gsub("(%x%x)", "%%%1")
  end
  for i = 1, PEERS do ids[i] = "-WK0001-" .. urlbytes(12) end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 100000)
end

function request()
  local peer = math.random(1, PEERS)
  local path = "/announce?info_hash=" .. hashes[math.random(1, #hashes)]
    .. "&peer_id=" .. ids[peer]
    .. "&port=" .. (6000 + peer)
    .. "&uploaded=0&downloaded=0&left=" .. (math.random(0, 3) == 0 and "0" or "1000")
    .. "&compact=1&numwant=50"
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "errors_connect": %d, "errors_read": %d, '
    .. '"errors_write": %d, "errors_status": %d, "errors_timeout": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end

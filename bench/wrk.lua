-- wrk script for bench/run.py and bench/engines.py (bench/wrk.py runs it):
--   wrk -t1 -cC -dD --latency -s bench/wrk.lua URL -- BODIES MODE STATUS KEY
-- BODIES: a file of request bodies, one a line (compact JSON has no newline). Each request is a POST of the
-- next body to URL's path, with content-type: application/json and x-api-key: KEY (when not "-").
-- MODE "cycle": the bodies in turn, from the first again after the last, until the duration ends.
-- MODE "once": first GET /healthz on every connection (see below), then each body exactly once, in order; then
--   GET /healthz (cheap, changes nothing), at most one per 10 ms per connection, while the last bodies are
--   answered. As soon as every body has had its answer the thread stops and wrk is sent SIGINT (its
--   own way to end a run early), so a run's events are exactly the file's; "once_us" is then the time from the
--   first request to the last body's answer (CLOCK_MONOTONIC). A body answered with anything but STATUS is
--   counted as bad and the run goes on to the duration's end, which the caller reports as a failure.
-- STATUS: the answer a body must get (200 for GraphQL, 202 for events); an answer with another status, or a
-- 200 whose JSON has "errors", is counted as bad.
-- done() prints one line "WRK-RESULT {...}" (JSON) with the counts and the latency percentiles (microseconds).
-- Use one thread (-t1): "once" counts per thread.
--
-- wrk 4.1 asks request() for a new request again when a connection's first write finds the socket not yet
-- writable (EAGAIN before any byte went out), and drops the one it had: a body would be lost. So "once" sends
-- GET /healthz, whose loss costs nothing, until 2 x CONNECTIONS (the 5th argument) answers have come (every
-- connection has written), and only then the bodies; a request() call made while every connection already
-- waits for an answer is such a re-ask, and once the bodies have begun it counts as bad (a body may have been
-- dropped), so the caller fails the run rather than report a state the model cannot predict.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
int kill(int pid, int sig);
int getpid(void);
]]
local clock = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1e6 + tonumber(clock.tv_nsec) / 1e3
end

local bodies, n, sent, answered, bad, mode, expect = {}, 0, 0, 0, 0, "cycle", 200
local connections, calls, responses, dropped = 0, 0, 0, 0
local started, finished = nil, false
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      bodies[n] = line
    end
  end
  mode = args[2] or "cycle"
  expect = tonumber(args[3] or "200")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if args[4] and args[4] ~= "-" then
    wrk.headers["x-api-key"] = args[4]
  end
  connections = tonumber(args[5] or "0")
  wrk.thread:set("bodies", n)
end

function request()
  if mode == "once" then
    if calls - responses - dropped >= connections then
      -- every connection already waits for an answer: wrk dropped this connection's last request unsent
      dropped = dropped + 1
      if sent > 0 then  -- maybe a body: the events sent are no longer known
        bad = bad + 1
        wrk.thread:set("bad", bad)
      end
    end
    calls = calls + 1
    if responses < 2 * connections or sent >= n then  -- primers (every connection has written), then fillers
      return wrk.format("GET", "/healthz", {}, nil)
    end
  end
  sent = sent + 1
  if not started then
    started = now_us()
  end
  return wrk.format(nil, nil, nil, bodies[(sent - 1) % n + 1])
end

function delay()
  if mode == "once" and sent >= n then
    return 10
  end
  return 0
end

function response(status, headers, body)
  responses = responses + 1
  if status == expect and not (expect == 200 and body and string.find(body, '"errors"', 1, true)) then
    answered = answered + 1
  elseif not (mode == "once" and status == 200) then  -- the /healthz fillers answer 200
    bad = bad + 1
  end
  wrk.thread:set("answered", answered)
  wrk.thread:set("bad", bad)
  if mode == "once" and answered >= n and not finished then
    finished = true
    wrk.thread:set("once_us", now_us() - started)
    wrk.thread:stop()
    ffi.C.kill(ffi.C.getpid(), 2)  -- SIGINT: wrk's main thread stops waiting for the duration's end
  end
end

function done(summary, latency, requests)
  local answered_all, bad_all, bodies_all, once_us = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    answered_all = answered_all + (t:get("answered") or 0)
    bad_all = bad_all + (t:get("bad") or 0)
    bodies_all = bodies_all + (t:get("bodies") or 0)
    once_us = math.max(once_us, t:get("once_us") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests": %d, "duration_us": %d, "answered": %d, "bad": %d, "bodies": %d, "once_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, answered_all, bad_all, bodies_all, once_us,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end

-- wrk script: POST Apple notifications (~930 B, 9 assignments), each with its own notificationId, and print a
-- JSON summary line the harness parses (bench/http.py). Usage:
--   wrk -t1 -c32 -d10s --latency -s bench/wrk/apple.lua URL -- TOKEN RUNTAG
-- RUNTAG makes the ids unique across runs (the broker deduplicates repeated bodies).

local threads = {}
local counter = 0
local token = "bench-token"
local tag = "run"

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  token = args[1] or token
  tag = args[2] or tag
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

local serials = {}
for i = 1, 9 do
  serials[#serials + 1] = string.format(
    '{"adamId":"408709785","pricingParam":"STDQ","serialNumber":"C02XK1ABJG5H%02d"}', i)
end
local assignments = table.concat(serials, ",")

function request()
  counter = counter + 1
  local id = string.format("%s-%d-%012d", tag, tid or 0, counter)
  local body = '{"notification":{"assignments":[' .. assignments .. '],'
    .. '"eventId":"954910a8-5f30-4c8d-a0e7-7a1b8c3d2e10","result":"SUCCESS","type":"ASSOCIATE"},'
    .. '"notificationId":"' .. id .. '","notificationType":"ASSET_MANAGEMENT",'
    .. '"uId":"2049025000431439"}'
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end

-- HTTP/1.1 pipelining for wrk, the TechEmpower way: DEPTH copies of the
-- request built from the URL (GET /plaintext) are concatenated and sent in
-- one write; wrk counts the requests in that buffer and waits for that many
-- responses before writing again, so "requests" below are real responses.
--
-- Depth: first script argument, else env PIPELINE_DEPTH, else 16.
--   wrk -t1 -c50 -d10s -s pipeline.lua http://127.0.0.1:8080/plaintext -- 16
init = function(args)
  local depth = tonumber(args[1]) or tonumber(os.getenv("PIPELINE_DEPTH")) or 16
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format()  -- method, path and Host header taken from the URL
  end
  req = table.concat(r)
end

-- Returning the same prebuilt buffer every time keeps the client cheap.
request = function()
  return req
end

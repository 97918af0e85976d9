-- POST the URL's path (a /publish/TOPIC) with a small body, for wrk: every request is a
-- publish, answered once the server has stored it (with --redis, once Redis acknowledged it).
--   wrk -t1 -c256 -d10s -s publish.lua http://127.0.0.1:8080/publish/flood
wrk.method = "POST"
wrk.body = "message"
wrk.headers["Content-Type"] = "text/plain"

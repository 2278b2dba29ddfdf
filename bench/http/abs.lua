-- wrk script: send the absolute-form request URI a proxy client sends
-- (GET http://target/path HTTP/1.1) instead of an origin-form path.
-- The URL comes from the environment: WRK_ABS_URL=http://127.0.0.1:18480/small
wrk.path = os.getenv("WRK_ABS_URL")

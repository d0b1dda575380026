-- wrk script: POST an Anthropic Messages request (the Anthropic SDK's shape) to /v1/messages.
-- With ../shared/bench/ctxgate-bench-anthropic.yaml the model is served by an Anthropic target:
-- the same family, relayed as it is. Use: wrk -s bench/messages.lua http://127.0.0.1:18090/v1/messages
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = os.getenv("BENCH_KEY") or "sk-bench"
wrk.body = [[{"model":"gpt-4o-mini","max_tokens":256,"temperature":0.2,"system":"You are a concise assistant for a travel company. Answer in one or two sentences.","messages":[{"role":"user","content":"Hi, I am planning a trip to Europe next spring and want to see a few capitals."},{"role":"assistant","content":"Great idea! Spring is a lovely time to visit. Which countries are you considering?"},{"role":"user","content":"France first. What is the capital of France, and what should I see there in two days?"}]}]]

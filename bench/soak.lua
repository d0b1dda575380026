-- soak.lua — wrk script for bench/soak.sh: a weighted mix of chat requests to the soak gateway,
-- one after the other on each connection:
--   plain     non-streamed, to the yardstick's nginx mock (model "plain")            x4
--   sse       streamed through the proxy, from bench/sse-mock.cjs (model "sse")     x2
--   mock      streamed by the Mock target (model "mock")                            x1
--   unknown   an unknown model: 404 model_not_found                                 x1
--   badjson   a body that is not JSON: 400 invalid_json                             x1
--   broken    the upstream answers 500: 502 upstream_error (model "broken")         x1
-- wrk counts the errors as non-2xx; that is expected (3 in 10 requests).
local user = [[{"role":"system","content":"You are a concise assistant for a travel company. Answer in one or two sentences."},{"role":"user","content":"France first. What is the capital of France, and what should I see there in two days?"}]]
local function body(model, stream)
  return '{"model":"' .. model .. '","max_tokens":256,' .. (stream and '"stream":true,' or '') ..
    '"messages":[' .. user .. ']}'
end

local mix = {
  body("plain", false), body("sse", true), body("plain", false), body("unknown-model", false),
  body("plain", false), body("mock", true), body("sse", true), '{"model":"plain","messages":[',
  body("plain", false), body("broken", false),
}

local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/chat/completions", { ["Content-Type"] = "application/json" },
    mix[(n % #mix) + 1])
end

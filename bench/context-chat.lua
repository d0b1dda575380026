-- context-chat.lua — wrk script for bench/context.sh: the yardstick's chat request (method,
-- headers and body come from shared/bench/chat.lua, loaded with dofile) plus an
-- X-Conversation-Id that changes with every request, cycling over BENCH_CONVERSATIONS ids
-- (default 1000) named BENCH_CONV_PREFIX .. n. Consecutive requests get different ids, so two
-- requests of one conversation are in flight together only when a connection stalls for a whole
-- cycle; the rare version conflict that follows is a 409 (counted by wrk as non-2xx).
-- env: BENCH_CHAT_LUA (path of chat.lua, required), BENCH_CONVERSATIONS, BENCH_CONV_PREFIX
local chat = os.getenv("BENCH_CHAT_LUA")
if not chat then
  error("context-chat.lua: set BENCH_CHAT_LUA to the path of shared/bench/chat.lua")
end
dofile(chat)

local conversations = tonumber(os.getenv("BENCH_CONVERSATIONS") or "1000")
local prefix = os.getenv("BENCH_CONV_PREFIX") or "bench-"
local n = 0

request = function()
  n = n + 1
  wrk.headers["X-Conversation-Id"] = prefix .. (n % conversations)
  return wrk.format()
end

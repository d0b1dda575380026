// tokens.mjs — the token counts a Mock target reports, computed independently with the npm package
// gpt-tokenizer (tiktoken's o200k_base, the encoding for model names ctxgate does not recognise),
// so integration tests can check the gateway's C tokenizer against a reference implementation.
// Chat prompts follow the OpenAI cookbook (docs/tokens.md): 3 per message + its string fields
// (+1 for a name), and 3 for the primed reply.
import { countTokens } from 'gpt-tokenizer/encoding/o200k_base';

export const textTokens = (text) => countTokens(String(text ?? ''));

function contentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.filter((p) => p && p.type === 'text').map((p) => p.text).join('');
  return '';
}

export function chatPromptTokens(messages) {
  let n = 3;
  for (const m of messages) {
    n += 3 + textTokens(m.role) + textTokens(contentText(m.content));
    if (typeof m.name === 'string') n += 1 + textTokens(m.name);
  }
  return n;
}

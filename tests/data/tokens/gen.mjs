// gen.mjs — makes the tokenizer fixtures in this folder (o200k_base.json, cl100k_base.json,
// chat.json) from OpenAI's own tokenizer core (the `tiktoken` npm package: tiktoken's Rust code
// compiled to WebAssembly), so the C tokenizer is checked against the reference, not against
// itself. `js-tiktoken` (a pure-JS port) is run too and every disagreement is printed: where they
// differ the Rust core is the truth (JS regex `\s` also matches U+FEFF; Rust's does not).
//
// Run without network once the two packages are in any node_modules folder:
//   npm install --prefix /tmp/tok tiktoken@1.0.22 js-tiktoken@1.0.21
//   node tests/data/tokens/gen.mjs /tmp/tok/node_modules
import { createRequire } from "node:module";
import { writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const nm = resolve(process.argv[2] ?? "node_modules");
const require = createRequire(join(nm, "noop.js"));
const tiktoken = require("tiktoken");
const jsTiktoken = require("js-tiktoken");
const here = dirname(fileURLToPath(import.meta.url));

// A fixed LCG so the long pseudo-random strings are the same on every run.
let seed = 12345;
const rnd = (n) => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed % n);
const pick = (alphabet, len) => Array.from({ length: len }, () => alphabet[rnd(alphabet.length)]).join("");

const texts = [
  // ASCII prose and edge sizes
  "", " ", "a", "hello", "hello world", "Hello, World!", "The quick brown fox jumps over the lazy dog.",
  "tiktoken is great!", "  leading spaces", "trailing spaces   ", "multiple   internal    spaces",
  "UPPERCASE WORDS AND lowercase words", "CamelCaseIdentifierName", "snake_case_identifier_name",
  "kebab-case-identifier", "ALLCAPS", "iPhone McDonald's O'Reilly",
  // contractions, case-insensitive in both patterns
  "I'm you're he's she'll we've they'd can't won't", "I'M YOU'RE HE'S SHE'LL WE'VE THEY'D",
  "It'S wE'Ve tHeY'lL", "don't'll 's 't 're", "rock'n'roll", "’curly’ quotes don’t match",
  "Straße'S", "SHOUTING'S fine",
  // numbers
  "0", "12", "123", "1234", "1234567890", "3.14159265358979", "1,000,000.00", "-42", "+1-555-0100",
  "2024-01-15T12:34:56Z", "0xDEADBEEF", "1e-10", "v1.2.3", "٠١٢٣٤٥٦٧٨٩", "①②③", "Ⅻ",
  // whitespace runs and newlines
  "\n", "\n\n", "\r\n", "a\nb", "a\r\nb", "line one\nline two\n", "\t\tindented\twith\ttabs",
  "word   \n   next", "trailing newline\n\n\n", "    \n    \n", "x \u00a0y", "a\u3000b", "a\u2028b\u2029c",
  "a\u0085b", "end with spaces  ", "mixed \t \n \r\n whitespace", " ".repeat(40) + "x",
  // punctuation and symbols
  "!!!???...", "a/b/c//d", "path/to/file.txt", "https://example.com/a?b=c&d=e#frag",
  "user@example.com", "$100 & 50% off!", "(parens) [brackets] {braces} <angles>", "«guillemets» „quotes“",
  "a—b–c-d", "©®™ §¶ °±", "<|endoftext|> is just text here", "<|im_start|>user<|im_sep|>",
  // code
  "def foo(x):\n    return x * 2\n", "int main(void) { return 0; }", "for (size_t i = 0; i < n; i++) {\n\tsum += a[i];\n}",
  "const x = () => { console.log(`template ${x}`); };", "SELECT id, name FROM users WHERE id = 42;",
  "{\"key\": \"value\", \"n\": [1, 2, 3], \"ok\": true}", "<div class=\"x\">Hi &amp; bye</div>",
  "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))", "git commit -m 'fix: handle edge case'",
  "    if x:\n        pass\n    else:\n        raise ValueError('bad')\n",
  // emoji and symbols outside the BMP
  "😀", "hello 👋 world 🌍", "👨‍👩‍👧‍👦 family", "🇫🇷🇯🇵 flags", "👍🏽 skin tone", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math", "🤖🤖🤖🤖🤖",
  // CJK, Japanese, Korean
  "你好，世界！", "我喜欢学习自然语言处理。", "日本語のテキストです。", "カタカナとひらがな", "한국어 문장입니다.",
  "中文English混合text", "東京タワー2024年",
  // Arabic, Hebrew, Cyrillic, Greek, Indic, Thai, combining marks
  "مرحبا بالعالم", "العربية: النص من اليمين إلى اليسار", "שלום עולם", "Привет, мир! Как дела?",
  "Ελληνικά γράμματα", "नमस्ते दुनिया", "สวัสดีครับ", "e\u0301le\u0300ve", "Ǆemal ǅ ǆ titlecase",
  "ſ long s'S and Kelvin \u212a", "\ufeffBOM at start", "x\u180ey", "hello \ufeffx", "a \u180e b", "a  \u180e\u180e  b",
  // mixed
  "Café naïve résumé coöperate", "Ünïcödé ÄÖÜ äöü ß", "123abc456def", "abc123", "a1b2c3d4e5",
  "mixed: English, 中文, العربية, 😀, 123!",
  // very long words and runs (these exercise the long-piece merge path)
  "a".repeat(300), "ab".repeat(200), "Supercalifragilisticexpialidocious".repeat(10),
  "pneumonoultramicroscopicsilicovolcanoconiosis", "!".repeat(500), "=".repeat(120) + "\n",
  pick("abcdefghijklmnopqrstuvwxyz", 700), pick("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 900),
  pick("0123456789abcdef", 512), "😀".repeat(60), "中".repeat(200), pick("अआइईउऊएऐओऔकखगघ", 300),
  " ".repeat(3000) + "end", "x" + "\n".repeat(200) + "y", "\t ".repeat(300) + "\n",
];

function compare(name) {
  const ref = tiktoken.get_encoding(name);
  const js = jsTiktoken.getEncoding(name);
  const cases = [];
  for (const text of texts) {
    const ids = Array.from(ref.encode_ordinary(text));
    const alt = js.encode(text, [], []);
    if (alt.length !== ids.length || alt.some((v, i) => v !== ids[i]))
      console.error(`${name}: js-tiktoken differs on ${JSON.stringify(text.slice(0, 40))} (fixture uses tiktoken)`);
    cases.push({ text, ids });
  }
  ref.free();
  const out = { generator: "tests/data/tokens/gen.mjs", reference: "tiktoken@1.0.22 encode_ordinary", encoding: name, cases };
  writeFileSync(join(here, `${name}.json`), JSON.stringify(out, null, 1) + "\n");
  console.log(`${name}: ${cases.length} cases`);
}
compare("o200k_base");
compare("cl100k_base");

// Chat counts: the OpenAI cookbook's num_tokens_from_messages ("How to count tokens with
// tiktoken"): 3 per message, +1 for a name, every string value encoded, +3 to prime the reply.
const cookbook = [
  { role: "system", content: "You are a helpful, pattern-following assistant that translates corporate jargon into plain English." },
  { role: "system", name: "example_user", content: "New synergies will help drive top-line growth." },
  { role: "system", name: "example_assistant", content: "Things working well together will increase revenue." },
  { role: "system", name: "example_user", content: "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage." },
  { role: "system", name: "example_assistant", content: "Let's talk later when we're less busy about how to do better." },
  { role: "user", content: "This late pivot means we don't have time to boil the ocean for the client deliverable." },
];
const small = [
  { role: "user", content: "Hi! 你好 😀" },
  { role: "assistant", content: "Hello, how can I help?" },
  { role: "user", name: "bob", content: "Count these tokens, please." },
];
function chatCount(name, messages) {
  const enc = tiktoken.get_encoding(name);
  let n = 3;
  for (const m of messages) {
    n += 3;
    for (const [k, v] of Object.entries(m)) {
      n += enc.encode_ordinary(v).length;
      if (k === "name") n += 1;
    }
  }
  enc.free();
  return n;
}
const chat = [];
for (const [label, messages] of [["cookbook", cookbook], ["small", small]])
  for (const enc of ["o200k_base", "cl100k_base"])
    chat.push({ label, encoding: enc, messages, count: chatCount(enc, messages) });
writeFileSync(join(here, "chat.json"), JSON.stringify({ generator: "tests/data/tokens/gen.mjs", cases: chat }, null, 1) + "\n");
for (const c of chat) console.log(`chat ${c.label} ${c.encoding}: ${c.count}`);

// ctest-summary.mjs — reads the output of `ctest -V` (a log file) and counts the cmocka test cases
// in it, for scripts/test.sh's one summary line. Prints ctest's own status lines, the output of
// every failed test executable, and as the LAST line `P F` (passed, failed test cases).
//
// Under -V every line a test prints carries a "N: " prefix (N = ctest's test number). Per test:
// cmocka's "[  PASSED  ] k test(s)." and "[  FAILED  ] k test(s)" give its case counts; ctest's
// verdict line ("Test #N: name ...   Passed" / "***Failed" / "***Exception: ..." / "***Timeout" /
// "Not Run") decides the executable. A failed executable without cmocka counts (a crash, a
// sanitizer abort, a leak report after the cases passed) counts as one more failure.
//
//   node tests/lib/ctest-summary.mjs build/ctest-verbose.log
import fs from 'node:fs';

const file = process.argv[2];
const text = fs.readFileSync(file, 'utf8');
const lines = text.split('\n');

const pass = new Map();
const fail = new Map();
const verdict = new Map(); // n -> {name, ok}
const outputOf = new Map(); // n -> lines

for (const line of lines) {
  const own = /^(\d+): (.*)$/.exec(line);
  if (own) {
    const n = own[1];
    if (!outputOf.has(n)) outputOf.set(n, []);
    outputOf.get(n).push(line);
    let m = /^\[ {2}PASSED {2}\] (\d+) test/.exec(own[2]);
    if (m) pass.set(n, (pass.get(n) || 0) + Number(m[1]));
    m = /^\[ {2}FAILED {2}\] (\d+) test/.exec(own[2]);
    if (m) fail.set(n, (fail.get(n) || 0) + Number(m[1]));
    continue;
  }
  const v = /Test +#(\d+): (\S+) .*?(\*\*\*\S.*|Not Run.*|Passed.*|Failed.*)$/.exec(line);
  if (v) verdict.set(v[1], { name: v[2], ok: /^Passed/.test(v[3]), how: v[3].trim() });
}

let P = 0;
let F = 0;
const report = [];
for (const line of lines) {
  if (/^\d+: /.test(line)) continue;
  if (/Test +#\d+:|tests passed|tests failed|No tests were found|Errors while running|The following tests/.test(line) || /^\s+\d+ - \S+ \(/.test(line)) {
    report.push(line);
  }
}
for (const [n, v] of verdict) {
  const p = pass.get(n) || 0;
  const f = fail.get(n) || 0;
  if (v.ok) {
    P += p || 1;
    F += f;
  } else {
    P += p;
    F += f > 0 ? f : 1;
    report.push(`--- output of failed test ${v.name} (${v.how}):`);
    const out = outputOf.get(n) || [];
    report.push(...out.slice(-300));
  }
}
console.log(report.join('\n'));
console.log(`${P} ${F}`);

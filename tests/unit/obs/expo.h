/* expo.h — a strict checker for the Prometheus text exposition format 0.0.4, shared by the obs
 * unit tests: it parses a whole page, rejects any malformed line, and checks the rules a scraper
 * relies on (HELP/TYPE before samples, one TYPE per family, histogram buckets ascending and
 * cumulative with +Inf equal to _count, counters named *_total, no duplicate series, UTF-8). */
#ifndef CTXGATE_TEST_OBS_EXPO_H
#define CTXGATE_TEST_OBS_EXPO_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"

typedef struct expo_sample {
    char name[128];
    char labels[1024]; /* as rendered between the braces, without le for buckets */
    char le[32];       /* le label of a _bucket sample, "" otherwise */
    double value;
} expo_sample;

typedef struct expo_family {
    char name[128];
    char type[16];
    bool help, seen_sample;
} expo_family;

/* per histogram series state, to check bucket order as lines arrive */
typedef struct expo_hist {
    char key[1200]; /* base \x01 labels */
    double prev_le, prev_v, inf_v;
    bool inf, sum;
    double count;
    bool has_count;
} expo_hist;

typedef struct expo_page {
    expo_sample *s;
    size_t n, cap;
    size_t *idx; /* open-addressing index of s by name+labels+le, for duplicates and lookups */
    size_t idxcap;
    expo_hist *h;
    size_t nh, caph;
    size_t *hidx;
    size_t hidxcap;
    expo_family fam[64];
    size_t nfam;
    char err[512]; /* first problem found, "" when the page is valid */
} expo_page;

static inline unsigned long long expo_hash3(const char *a, const char *b, const char *c)
{
    unsigned long long h = 1469598103934665603ull;
    const char *v[3] = {a, b, c};
    for (int k = 0; k < 3; k++) {
        for (const unsigned char *p = (const unsigned char *)v[k]; *p; p++)
            h = (h ^ *p) * 1099511628211ull;
        h = (h ^ 1) * 1099511628211ull;
    }
    return h;
}

/* Slot of name+labels+le in pg->idx: holds its sample index + 1, or 0 when absent. */
static inline size_t *expo_slot(const expo_page *pg, const char *name, const char *labels,
                                const char *le)
{
    if (!pg->idxcap) return NULL;
    size_t i = (size_t)expo_hash3(name, labels, le) & (pg->idxcap - 1);
    for (;; i = (i + 1) & (pg->idxcap - 1)) {
        size_t v = pg->idx[i];
        if (!v) return &pg->idx[i];
        const expo_sample *x = &pg->s[v - 1];
        if (!strcmp(x->name, name) && !strcmp(x->labels, labels) && !strcmp(x->le, le))
            return &pg->idx[i];
    }
}

static inline void expo_index_grow(expo_page *pg)
{
    if ((pg->n + 1) * 2 <= pg->idxcap) return;
    size_t ncap = pg->idxcap ? pg->idxcap * 2 : 1024;
    free(pg->idx);
    pg->idx = calloc(ncap, sizeof *pg->idx);
    pg->idxcap = ncap;
    for (size_t k = 0; k < pg->n; k++) {
        size_t *slot = expo_slot(pg, pg->s[k].name, pg->s[k].labels, pg->s[k].le);
        *slot = k + 1;
    }
}

static inline expo_hist *expo_hist_get(expo_page *pg, const char *base, const char *labels)
{
    char key[1200];
    snprintf(key, sizeof key, "%s\x01%s", base, labels);
    if ((pg->nh + 1) * 2 > pg->hidxcap) {
        size_t ncap = pg->hidxcap ? pg->hidxcap * 2 : 256;
        free(pg->hidx);
        pg->hidx = calloc(ncap, sizeof *pg->hidx);
        pg->hidxcap = ncap;
        for (size_t k = 0; k < pg->nh; k++) {
            size_t i = (size_t)expo_hash3(pg->h[k].key, "", "") & (ncap - 1);
            while (pg->hidx[i])
                i = (i + 1) & (ncap - 1);
            pg->hidx[i] = k + 1;
        }
    }
    size_t i = (size_t)expo_hash3(key, "", "") & (pg->hidxcap - 1);
    for (;; i = (i + 1) & (pg->hidxcap - 1)) {
        size_t v = pg->hidx[i];
        if (!v) break;
        if (!strcmp(pg->h[v - 1].key, key)) return &pg->h[v - 1];
    }
    if (pg->nh == pg->caph) {
        pg->caph = pg->caph ? pg->caph * 2 : 64;
        pg->h = realloc(pg->h, pg->caph * sizeof *pg->h);
    }
    expo_hist *h = &pg->h[pg->nh++];
    memset(h, 0, sizeof *h);
    snprintf(h->key, sizeof h->key, "%s", key);
    h->prev_le = -INFINITY;
    pg->hidx[i] = pg->nh;
    return h;
}

static inline bool expo_fail(expo_page *pg, int lineno, const char *why, const char *line)
{
    if (!pg->err[0]) snprintf(pg->err, sizeof pg->err, "line %d: %s: %.200s", lineno, why, line);
    return false;
}

static inline bool expo_is_name(const char *s, size_t n, bool colon_ok)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon_ok && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

static inline expo_family *expo_family_get(expo_page *pg, const char *name)
{
    for (size_t i = 0; i < pg->nfam; i++)
        if (strcmp(pg->fam[i].name, name) == 0) return &pg->fam[i];
    return NULL;
}

/* The family a sample name belongs to: a histogram's _bucket/_sum/_count map to the family. */
static inline expo_family *expo_family_of(expo_page *pg, const char *sample, bool *is_bucket)
{
    *is_bucket = false;
    expo_family *f = expo_family_get(pg, sample);
    if (f) return f;
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    size_t n = strlen(sample);
    for (int k = 0; k < 3; k++) {
        size_t m = strlen(sfx[k]);
        if (n > m && strcmp(sample + n - m, sfx[k]) == 0) {
            char base[128];
            snprintf(base, sizeof base, "%.*s", (int)(n - m), sample);
            f = expo_family_get(pg, base);
            if (f && strcmp(f->type, "histogram") == 0) {
                *is_bucket = k == 0;
                return f;
            }
        }
    }
    return NULL;
}

static inline bool expo_parse_value(const char *s, double *v)
{
    if (strcmp(s, "+Inf") == 0) return *v = INFINITY, true;
    if (strcmp(s, "-Inf") == 0) return *v = -INFINITY, true;
    if (strcmp(s, "NaN") == 0) return *v = NAN, true;
    char *end;
    *v = strtod(s, &end);
    return end != s && *end == 0 && isfinite(*v);
}

/* Parses one sample line into pg; false (with pg->err) when malformed. */
static inline bool expo_sample_line(expo_page *pg, int lineno, const char *line)
{
    expo_sample smp;
    memset(&smp, 0, sizeof smp);
    const char *p = line;
    size_t nl = strcspn(p, "{ ");
    if (!expo_is_name(p, nl, true) || nl >= sizeof smp.name)
        return expo_fail(pg, lineno, "bad metric name", line);
    memcpy(smp.name, p, nl);
    p += nl;
    size_t lab = 0;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            size_t ln = strcspn(p, "=");
            if (!expo_is_name(p, ln, false)) return expo_fail(pg, lineno, "bad label name", line);
            const char *lname = p;
            p += ln;
            if (p[0] != '=' || p[1] != '"') return expo_fail(pg, lineno, "label without =\"", line);
            p += 2;
            const char *vstart = p;
            while (*p && *p != '"') {
                if (*p == '\n') return expo_fail(pg, lineno, "raw newline in label", line);
                if (*p == '\\') {
                    if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                        return expo_fail(pg, lineno, "bad escape in label value", line);
                    p++;
                }
                p++;
            }
            if (*p != '"') return expo_fail(pg, lineno, "unterminated label value", line);
            size_t vlen = (size_t)(p - vstart);
            p++;
            if (ln == 2 && strncmp(lname, "le", 2) == 0) {
                if (vlen >= sizeof smp.le) return expo_fail(pg, lineno, "le too long", line);
                memcpy(smp.le, vstart, vlen);
            } else {
                int w = snprintf(smp.labels + lab, sizeof smp.labels - lab, "%s%.*s",
                                 lab ? "," : "", (int)(p - lname), lname);
                if (w < 0 || (size_t)w >= sizeof smp.labels - lab)
                    return expo_fail(pg, lineno, "labels too long for the checker", line);
                lab += (size_t)w;
            }
            if (*p == ',')
                p++;
            else if (*p != '}')
                return expo_fail(pg, lineno, "expected , or } after label", line);
        }
        p++;
    }
    if (*p != ' ') return expo_fail(pg, lineno, "expected a space before the value", line);
    p++;
    char val[64];
    size_t vn = strcspn(p, " ");
    if (vn == 0 || vn >= sizeof val) return expo_fail(pg, lineno, "missing value", line);
    memcpy(val, p, vn);
    val[vn] = 0;
    if (!expo_parse_value(val, &smp.value)) return expo_fail(pg, lineno, "bad value", line);
    p += vn;
    if (*p == ' ') { /* optional timestamp: an integer */
        p++;
        char *end;
        (void)strtoll(p, &end, 10);
        if (end == p || *end) return expo_fail(pg, lineno, "bad timestamp", line);
    } else if (*p) {
        return expo_fail(pg, lineno, "trailing bytes", line);
    }

    bool is_bucket;
    expo_family *f = expo_family_of(pg, smp.name, &is_bucket);
    if (!f) return expo_fail(pg, lineno, "sample without a # TYPE line for its family", line);
    f->seen_sample = true;
    if (strcmp(f->type, "counter") == 0 && smp.value < 0)
        return expo_fail(pg, lineno, "negative counter", line);
    if (is_bucket && !smp.le[0]) return expo_fail(pg, lineno, "_bucket without le", line);
    if (!is_bucket && smp.le[0]) return expo_fail(pg, lineno, "le outside a _bucket", line);
    if (strcmp(f->type, "histogram") == 0) {
        if (strcmp(smp.name, f->name) == 0)
            return expo_fail(pg, lineno, "histogram sample without _bucket/_sum/_count", line);
        expo_hist *h = expo_hist_get(pg, f->name, smp.labels);
        if (is_bucket) {
            double le;
            if (!expo_parse_value(smp.le, &le) || isnan(le))
                return expo_fail(pg, lineno, "bad le value", line);
            if (h->inf || le <= h->prev_le) return expo_fail(pg, lineno, "le not ascending", line);
            if (smp.value < h->prev_v) return expo_fail(pg, lineno, "buckets not cumulative", line);
            h->prev_le = le;
            h->prev_v = smp.value;
            if (isinf(le)) {
                h->inf = true;
                h->inf_v = smp.value;
            }
        } else if (strcmp(smp.name + strlen(f->name), "_sum") == 0) {
            h->sum = true;
        } else {
            h->has_count = true;
            h->count = smp.value;
        }
    }
    expo_index_grow(pg);
    size_t *slot = expo_slot(pg, smp.name, smp.labels, smp.le);
    if (*slot) return expo_fail(pg, lineno, "duplicate series", line);
    if (pg->n == pg->cap) {
        pg->cap = pg->cap ? pg->cap * 2 : 256;
        pg->s = realloc(pg->s, pg->cap * sizeof *pg->s);
    }
    pg->s[pg->n++] = smp;
    *slot = pg->n;
    return true;
}

/* Histogram rules, checked once the page is read: every histogram series has +Inf, _sum and
 * _count, and +Inf equals _count. */
static inline bool expo_check_histograms(expo_page *pg)
{
    for (size_t i = 0; i < pg->nh; i++) {
        const expo_hist *h = &pg->h[i];
        if (!h->inf) return expo_fail(pg, 0, "histogram without +Inf bucket", h->key);
        if (!h->sum) return expo_fail(pg, 0, "histogram without _sum", h->key);
        if (!h->has_count) return expo_fail(pg, 0, "histogram without _count", h->key);
        if (h->count != h->inf_v) return expo_fail(pg, 0, "+Inf bucket != _count", h->key);
    }
    return true;
}

/* Parses and checks a whole page; true when valid. Free with expo_free. */
static inline bool expo_parse(expo_page *pg, const char *text)
{
    memset(pg, 0, sizeof *pg);
    size_t total = strlen(text);
    for (size_t i = 0; i < total;) {
        size_t len = utf8_seq_len((const unsigned char *)text + i, total - i);
        if (!len) return expo_fail(pg, 0, "invalid UTF-8", text + i);
        i += len;
    }
    if (total == 0 || text[total - 1] != '\n') return expo_fail(pg, 0, "page must end in \\n", "");
    int lineno = 0;
    const char *p = text;
    char line[4096];
    const char *end = text + total;
    while (p < end) {
        lineno++;
        /* memchr with the known length: a str* scan of the rest of the page per line is
         * quadratic under ASan's strict_string_checks, which CI turns on */
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (n >= sizeof line) return expo_fail(pg, lineno, "line too long for the checker", "");
        memcpy(line, p, n);
        line[n] = 0;
        p += n + 1;
        if (n == 0) continue;
        if (line[0] == '#') {
            char kw[8], name[160], rest[256];
            rest[0] = 0;
            if (sscanf(line, "# %7s %159s %255[^\n]", kw, name, rest) >= 2 &&
                (strcmp(kw, "HELP") == 0 || strcmp(kw, "TYPE") == 0)) {
                if (!expo_is_name(name, strlen(name), true) || strlen(name) >= 128)
                    return expo_fail(pg, lineno, "bad family name", line);
                expo_family *f = expo_family_get(pg, name);
                if (!f) {
                    if (pg->nfam == sizeof pg->fam / sizeof pg->fam[0])
                        return expo_fail(pg, lineno, "too many families for the checker", line);
                    f = &pg->fam[pg->nfam++];
                    snprintf(f->name, sizeof f->name, "%.127s", name);
                }
                if (f->seen_sample) return expo_fail(pg, lineno, "HELP/TYPE after samples", line);
                if (strcmp(kw, "HELP") == 0) {
                    if (f->help) return expo_fail(pg, lineno, "second HELP", line);
                    f->help = true;
                } else {
                    if (f->type[0]) return expo_fail(pg, lineno, "second TYPE", line);
                    if (strcmp(rest, "counter") && strcmp(rest, "gauge") &&
                        strcmp(rest, "histogram") && strcmp(rest, "summary") &&
                        strcmp(rest, "untyped"))
                        return expo_fail(pg, lineno, "unknown TYPE", line);
                    snprintf(f->type, sizeof f->type, "%.15s", rest);
                    size_t nn = strlen(name);
                    if (strcmp(rest, "counter") == 0 &&
                        (nn < 6 || strcmp(name + nn - 6, "_total") != 0))
                        return expo_fail(pg, lineno, "counter name must end in _total", line);
                }
            }
            continue; /* other comments are allowed */
        }
        if (!expo_sample_line(pg, lineno, line)) return false;
    }
    return expo_check_histograms(pg);
}

static inline void expo_free(expo_page *pg)
{
    free(pg->s);
    free(pg->idx);
    free(pg->h);
    free(pg->hidx);
    pg->s = NULL;
    pg->idx = pg->hidx = NULL;
    pg->h = NULL;
}

/* The value of the series name{labels} (labels as rendered, le excluded), or NAN when absent. */
static inline double expo_value(const expo_page *pg, const char *name, const char *labels,
                                const char *le)
{
    const size_t *slot = expo_slot(pg, name, labels, le ? le : "");
    return slot && *slot ? pg->s[*slot - 1].value : NAN;
}

/* How many series of name have labels starting with prefix. */
static inline size_t expo_count(const expo_page *pg, const char *name, const char *prefix)
{
    size_t n = 0;
    for (size_t i = 0; i < pg->n; i++)
        if (strcmp(pg->s[i].name, name) == 0 &&
            strncmp(pg->s[i].labels, prefix, strlen(prefix)) == 0)
            n++;
    return n;
}

#endif

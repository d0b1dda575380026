/* diag.c — the list of diagnostics a load produces, and their one-line text form
 * "FILE:LINE: PATH: MESSAGE" (warnings: "FILE:LINE: warning: PATH: MESSAGE"). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config/load_internal.h"

void cfg_diag_add(cfg_diags *d, const char *file, int line, bool warning, const char *path,
                  const char *fmt, ...)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        cfg_diag *items = realloc(d->items, cap * sizeof *items);
        if (!items) abort();
        d->items = items;
        d->cap = cap;
    }
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cfg_diag *it = &d->items[d->n++];
    it->file = strdup(file ? file : "");
    it->line = line;
    it->path = strdup(path ? path : "");
    it->message = strdup(msg);
    it->warning = warning;
    if (!it->file || !it->path || !it->message) abort();
    if (!warning) d->n_errors++;
}

void cfg_diags_print(FILE *f, const cfg_diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        const cfg_diag *it = &d->items[i];
        fputs(it->file, f);
        if (it->line > 0) fprintf(f, ":%d", it->line);
        fputs(": ", f);
        if (it->warning) fputs("warning: ", f);
        if (it->path[0]) fprintf(f, "%s: ", it->path);
        fprintf(f, "%s\n", it->message);
    }
}

void cfg_diags_free(cfg_diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->items[i].file);
        free(d->items[i].path);
        free(d->items[i].message);
    }
    free(d->items);
    memset(d, 0, sizeof *d);
}

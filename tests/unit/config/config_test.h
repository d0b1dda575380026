/* config_test.h — helpers shared by the config unit tests: fixture paths and diagnostics as
 * the exact text `ctxgate validate` prints. */
#ifndef CTXGATE_TESTS_CONFIG_TEST_H
#define CTXGATE_TESTS_CONFIG_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/load.h"

/* chdir into tests/data/config/SUB so diagnostics carry short, stable file names */
static inline void cfgt_chdir(const char *sub)
{
    const char *src = getenv("CTXGATE_SOURCE_DIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/data/config/%s", src ? src : ".", sub);
    if (chdir(dir) != 0) {
        fprintf(stderr, "cannot chdir to %s (set CTXGATE_SOURCE_DIR)\n", dir);
        abort();
    }
}

/* the printed form of the diagnostics; want_warnings selects warnings or errors */
static inline char *cfgt_render(const cfg_diags *d, int want_warnings)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    for (size_t i = 0; i < d->n; i++) {
        if ((int)d->items[i].warning != want_warnings) continue;
        cfg_diags one = {.items = &d->items[i], .n = 1, .cap = 1};
        cfg_diags_print(f, &one);
    }
    fclose(f);
    return text;
}

#endif

/* fuzz_config.c — the manifest loader (src/config/load.c: libyaml documents, conversion, schema
 * validation, cross-references, the snapshot build) on arbitrary file contents. The input is
 * one file (any number of YAML documents), read through cfg_load_paths as `ctxgate validate`
 * and `serve` read theirs; an in-memory file stands in for the disk.
 *
 * Checks beyond "no crash": the return value agrees with the diagnostics (0 and a snapshot with
 * no error, -1 and no snapshot with at least one), every diagnostic has a message, and the
 * diagnostics print. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config/load.h"
#include "core/log.h"

static int fd = -1;
static char path[64];
static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    fd = memfd_create("fuzz-config.yaml", 0);
    if (fd < 0) abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    devnull = fopen("/dev/null", "w");
    if (!devnull) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024) return -1;
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) abort();
    const char *paths[] = {path};
    cfg_snapshot *snap = NULL;
    cfg_diags diags = {0};
    cfg_load_report rep = {0};
    int rc = cfg_load_paths_report(paths, 1, &snap, &diags, &rep);
    if (rc == 0) {
        if (!snap || diags.n_errors != 0) abort();
        (void)cfg_find_gateway(snap, NULL);
        (void)cfg_find_mcp(snap, "fuzz");
        cfg_snapshot_unref(snap);
    } else {
        if (rc != -1 || snap || diags.n_errors == 0) abort();
    }
    for (size_t i = 0; i < diags.n; i++)
        if (!diags.items[i].message || !diags.items[i].message[0]) abort();
    cfg_diags_print(devnull, &diags);
    cfg_diags_free(&diags);
    cfg_load_report_free(&rep);
    return 0;
}

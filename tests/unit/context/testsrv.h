/* testsrv.h — real Redis and PostgreSQL servers for tests: started on a free loopback port with
 * a private temporary data directory, stopped (and the directory removed) by the test, and by an
 * atexit hook if a test dies on the way. PostgreSQL refuses to run as root, so under root it runs
 * as the `postgres` user (runuser) with a directory that user owns.
 *
 * Unit tests are one .c file each (see CMakeLists.txt), so a test includes testsrv.c directly. */
#ifndef CTXGATE_TESTS_CONTEXT_TESTSRV_H
#define CTXGATE_TESTS_CONTEXT_TESTSRV_H

#include <stdbool.h>
#include <sys/types.h>

typedef enum { TESTSRV_REDIS, TESTSRV_POSTGRES } testsrv_kind;

typedef struct testsrv {
    testsrv_kind kind;
    int port;
    pid_t pid; /* redis-server (PostgreSQL is managed through pg_ctl) */
    bool running;
    char dir[256];     /* private data directory, removed by testsrv_destroy */
    char password[64]; /* Redis requirepass ("" = none) */
    char url[512]; /* redis://127.0.0.1:PORT/DB or postgresql://postgres@127.0.0.1:PORT/postgres */
    char err[512]; /* why a start failed */
} testsrv;

/* 0 on success; -1 with t->err filled. */
int testsrv_redis_start(testsrv *t, const char *password, int db);
int testsrv_postgres_start(testsrv *t);
/* Stops the server, keeping port and directory (for restart tests). */
void testsrv_stop(testsrv *t);
/* Starts it again on the same port and directory. */
int testsrv_restart(testsrv *t);
/* Stops and removes the directory. Safe to call twice. */
void testsrv_destroy(testsrv *t);

int testsrv_free_port(void);

#endif

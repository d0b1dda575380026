/* testsrv.c — see testsrv.h. Servers are child processes of the test; nothing is left
 * behind: stop on destroy, on exit, and redis-server dies with its parent (PDEATHSIG). */
#include "testsrv.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TESTSRV_MAX 8
static testsrv *testsrv_all[TESTSRV_MAX];

static void testsrv_atexit(void)
{
    for (int i = 0; i < TESTSRV_MAX; i++)
        if (testsrv_all[i]) testsrv_destroy(testsrv_all[i]);
}

static void testsrv_track(testsrv *t)
{
    static bool hooked;
    if (!hooked) {
        atexit(testsrv_atexit);
        hooked = true;
    }
    for (int i = 0; i < TESTSRV_MAX; i++)
        if (testsrv_all[i] == t) return;
    for (int i = 0; i < TESTSRV_MAX; i++)
        if (!testsrv_all[i]) {
            testsrv_all[i] = t;
            return;
        }
}

int testsrv_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0) close(fd);
    return ok;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs argv (as `user` when not NULL and we are root); returns the exit status. */
static int run_cmd(const char *user, char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        if (user && geteuid() == 0) {
            const char *args[32] = {"runuser", "-u", user, "--"};
            int n = 4;
            for (int i = 0; argv[i] && n < 31; i++)
                args[n++] = argv[i];
            args[n] = NULL;
            execvp("runuser", (char *const *)args);
        } else {
            execvp(argv[0], argv);
        }
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int make_dir(testsrv *t, const char *tag)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/ctxgate-%s-XXXXXX", tag);
    if (!mkdtemp(t->dir)) {
        snprintf(t->err, sizeof(t->err), "mkdtemp: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- Redis ---- */

static int redis_spawn(testsrv *t)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", t->port);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) dup2(devnull, 1);
        const char *argv[20] = {
            "redis-server", "--port", port,    "--bind", "127.0.0.1",   "--save", "",
            "--appendonly", "no",     "--dir", t->dir,   "--daemonize", "no"};
        int n = 13;
        if (t->password[0]) {
            argv[n++] = "--requirepass";
            argv[n++] = t->password;
        }
        argv[n] = NULL;
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    t->pid = pid;
    for (int i = 0; i < 200; i++) {
        if (port_open(t->port)) {
            t->running = true;
            return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            t->pid = 0;
            snprintf(t->err, sizeof(t->err), "redis-server exited during start (port %d)", t->port);
            return -1;
        }
        nap_ms(25);
    }
    snprintf(t->err, sizeof(t->err), "redis-server did not listen on port %d", t->port);
    return -1;
}

int testsrv_redis_start(testsrv *t, const char *password, int db)
{
    memset(t, 0, sizeof(*t));
    t->kind = TESTSRV_REDIS;
    snprintf(t->password, sizeof(t->password), "%s", password ? password : "");
    if (make_dir(t, "redis") != 0) return -1;
    testsrv_track(t);
    for (int attempt = 0; attempt < 5; attempt++) {
        t->port = testsrv_free_port();
        if (redis_spawn(t) == 0) {
            snprintf(t->url, sizeof(t->url), "redis://127.0.0.1:%d/%d", t->port, db);
            return 0;
        }
    }
    return -1;
}

/* ---- PostgreSQL ---- */

static const char *pg_bindir(char *out, size_t n)
{
    glob_t g;
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) != 0 || g.gl_pathc == 0) return NULL;
    snprintf(out, n, "%s", g.gl_pathv[g.gl_pathc - 1]);
    globfree(&g);
    char *slash = strrchr(out, '/');
    *slash = 0;
    return out;
}

static int pg_ctl_start(testsrv *t)
{
    char bin[256], pg_ctl[300], data[300], log[300], opts[512];
    if (!pg_bindir(bin, sizeof(bin))) return -1;
    snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", bin);
    snprintf(data, sizeof(data), "%s/data", t->dir);
    snprintf(log, sizeof(log), "%s/server.log", t->dir);
    snprintf(opts, sizeof(opts),
             "-k %s -p %d -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
             t->dir, t->port);
    char *argv[] = {pg_ctl, "-D", data, "-l", log, "-o", opts, "-w", "-t", "60", "start", NULL};
    if (run_cmd("postgres", argv) != 0) {
        snprintf(t->err, sizeof(t->err), "pg_ctl start failed on port %d; see %s", t->port, log);
        return -1;
    }
    t->running = true;
    return 0;
}

int testsrv_postgres_start(testsrv *t)
{
    memset(t, 0, sizeof(*t));
    t->kind = TESTSRV_POSTGRES;
    char bin[256], initdb[300], data[300];
    if (!pg_bindir(bin, sizeof(bin))) {
        snprintf(t->err, sizeof(t->err),
                 "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); install "
                 "the postgresql package");
        return -1;
    }
    if (make_dir(t, "pg") != 0) return -1;
    testsrv_track(t);
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw || chown(t->dir, pw->pw_uid, pw->pw_gid) != 0) {
            snprintf(t->err, sizeof(t->err), "running as root needs the 'postgres' user");
            return -1;
        }
    }
    snprintf(initdb, sizeof(initdb), "%s/initdb", bin);
    snprintf(data, sizeof(data), "%s/data", t->dir);
    char *argv[] = {initdb,     "-D",        data, "-A",   "trust", "-U",
                    "postgres", "--no-sync", "-E", "UTF8", NULL};
    if (run_cmd("postgres", argv) != 0) {
        snprintf(t->err, sizeof(t->err), "initdb into %s failed", data);
        return -1;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        t->port = testsrv_free_port();
        if (pg_ctl_start(t) == 0) {
            snprintf(t->url, sizeof(t->url), "postgresql://postgres@127.0.0.1:%d/postgres",
                     t->port);
            return 0;
        }
    }
    return -1;
}

/* ---- common ---- */

void testsrv_stop(testsrv *t)
{
    if (!t->running) return;
    if (t->kind == TESTSRV_REDIS) {
        if (t->pid > 0) {
            kill(t->pid, SIGTERM);
            while (waitpid(t->pid, NULL, 0) < 0 && errno == EINTR) {
            }
        }
        t->pid = 0;
    } else {
        char bin[256], pg_ctl[300], data[300];
        if (pg_bindir(bin, sizeof(bin))) {
            snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", bin);
            snprintf(data, sizeof(data), "%s/data", t->dir);
            char *argv[] = {pg_ctl, "-D", data, "-m", "immediate", "-w", "stop", NULL};
            run_cmd("postgres", argv);
        }
    }
    t->running = false;
}

int testsrv_restart(testsrv *t)
{
    testsrv_stop(t);
    if (t->kind == TESTSRV_REDIS) {
        for (int i = 0; i < 100; i++) { /* the old socket may linger a moment */
            if (redis_spawn(t) == 0) return 0;
            nap_ms(50);
        }
        return -1;
    }
    return pg_ctl_start(t);
}

void testsrv_destroy(testsrv *t)
{
    testsrv_stop(t);
    if (t->dir[0]) {
        char *argv[] = {"rm", "-rf", t->dir, NULL};
        run_cmd(NULL, argv);
        t->dir[0] = 0;
    }
    for (int i = 0; i < TESTSRV_MAX; i++)
        if (testsrv_all[i] == t) testsrv_all[i] = NULL;
}

/* pace.c — open-loop paced HTTP/1.1 load generator for bench/latency.sh.
 *
 * h2load --rps sends each client's quota in bursts, so at "1,000 req/s" the server sees bursts
 * of dozens of requests and the percentiles measure queueing in those bursts. pace sends request
 * i at exactly start + i/rate (a CLOCK_MONOTONIC timerfd with microsecond resolution), each on an
 * idle keep-alive connection from a pool, and measures latency from the scheduled time (so a slow
 * response that delays later requests is counted, not hidden: no coordinated omission) and from
 * the actual send. A connection the server closes is reopened (a request lost with it is logged
 * with status 0 and not counted as 2xx). Built by latency.sh with `cc bench/pace.c -luv
 * -lhttp_parser`.
 *
 * usage: pace -p PORT -r RATE -d SECONDS -c CONNS -b BODYFILE [-H 'Name: value']... -o LOG PATH
 * log: one line per request: sched_us(from start) from_sched_us from_send_us status */
#include <errno.h>
#include <http_parser.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

typedef struct conn {
    uv_tcp_t tcp;
    http_parser parser;
    int busy, connected;
    size_t req; /* index of the request in flight */
    char rbuf[65536];
} conn;

typedef struct result {
    uint64_t sched, sent, done;
    int status;
} result;

static uv_loop_t *loop;
static conn *conns;
static int nconns, connected;
static char *request; /* the full request bytes */
static size_t request_len;
static result *res;
static size_t total, next_due, sent_n, done_n, pending_head;
static uint64_t t0, interval_ns;
static int tfd;
static uv_poll_t tpoll;
static http_parser_settings settings;
static struct sockaddr_in addr;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "pace: %s: %s\n", what, err < 0 ? uv_strerror(err) : strerror(err));
    exit(1);
}

static void on_written(uv_write_t *w, int status)
{
    free(w); /* a failed write shows up as a closed connection in on_read */
}

static void send_on(conn *c, size_t i)
{
    c->busy = 1;
    c->req = i;
    res[i].sent = now_ns();
    sent_n++;
    uv_write_t *w = malloc(sizeof *w);
    uv_buf_t b = uv_buf_init(request, (unsigned)request_len);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) free(w);
}

/* Sends every due request that has an idle connection; the rest wait in order. */
static void dispatch(void)
{
    for (int k = 0; k < nconns && pending_head < next_due; k++) {
        conn *c = &conns[k];
        if (c->connected && !c->busy) send_on(c, pending_head++);
    }
}

static void arm_timer(void)
{
    if (next_due >= total) return;
    uint64_t at = t0 + next_due * interval_ns;
    struct itimerspec its = {
        .it_value = {(time_t)(at / 1000000000ull), (long)(at % 1000000000ull)}};
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime", errno);
}

static void on_tick(uv_poll_t *p, int status, int events)
{
    uint64_t expirations;
    if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("read", errno);
    uint64_t now = now_ns();
    while (next_due < total && t0 + next_due * interval_ns <= now) {
        res[next_due].sched = t0 + next_due * interval_ns;
        next_due++;
    }
    dispatch();
    if (next_due < total)
        arm_timer();
    else
        uv_poll_stop(p);
}

static int on_complete(http_parser *hp)
{
    conn *c = hp->data;
    result *r = &res[c->req];
    r->done = now_ns();
    r->status = (int)hp->status_code;
    c->busy = 0;
    done_n++;
    if (pending_head < next_due) send_on(c, pending_head++);
    if (done_n == total) uv_stop(loop);
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    conn *c = h->data;
    *b = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void conn_open(conn *c);

static void on_closed(uv_handle_t *h)
{
    conn_open(h->data); /* servers may cap requests per connection: open a fresh one */
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn *c = s->data;
    if (n < 0) {
        c->connected = 0;
        if (c->busy) { /* the request in flight is lost: logged with status 0 */
            res[c->req].done = now_ns();
            res[c->req].status = 0;
            c->busy = 0;
            if (++done_n == total) {
                uv_stop(loop);
                return;
            }
        }
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    size_t got = http_parser_execute(&c->parser, &settings, b->base, (size_t)n);
    if (got != (size_t)n) {
        fprintf(stderr, "pace: bad HTTP response: %s\n",
                http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
        exit(1);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    conn *c = req->data;
    free(req);
    if (status < 0) die("connect", status);
    c->connected = 1;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (pending_head < next_due) send_on(c, pending_head++);
    if (++connected == nconns) { /* all connected the first time: start the clock */
        t0 = now_ns() + 10000000ull;
        arm_timer();
        uv_poll_start(&tpoll, UV_READABLE, on_tick);
    }
}

static void conn_open(conn *c)
{
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    uv_connect_t *req = malloc(sizeof *req);
    req->data = c;
    int rc = uv_tcp_connect(req, &c->tcp, (const struct sockaddr *)&addr, on_connect);
    if (rc < 0) die("connect", rc);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t pct(const uint64_t *v, size_t n, double q)
{
    size_t i = (size_t)(q * (double)n + 0.5);
    if (i < 1) i = 1;
    if (i > n) i = n;
    return v[i - 1];
}

int main(int argc, char **argv)
{
    int port = 0, opt;
    double rate = 1000, secs = 10;
    const char *bodyfile = NULL, *logfile = NULL;
    char headers[4096] = "";
    nconns = 16;
    while ((opt = getopt(argc, argv, "p:r:d:c:b:H:o:")) != -1) {
        switch (opt) {
        case 'p':
            port = atoi(optarg);
            break;
        case 'r':
            rate = atof(optarg);
            break;
        case 'd':
            secs = atof(optarg);
            break;
        case 'c':
            nconns = atoi(optarg);
            break;
        case 'b':
            bodyfile = optarg;
            break;
        case 'o':
            logfile = optarg;
            break;
        case 'H':
            if (strlen(headers) + strlen(optarg) + 3 >= sizeof headers) die("headers", E2BIG);
            strcat(headers, optarg);
            strcat(headers, "\r\n");
            break;
        default:
            return 2;
        }
    }
    if (optind >= argc || !port || !bodyfile || !logfile || rate <= 0 || nconns <= 0) {
        fprintf(stderr, "usage: pace -p PORT -r RATE -d SECONDS -c CONNS -b BODYFILE "
                        "[-H 'Name: value']... -o LOG PATH\n");
        return 2;
    }
    FILE *bf = fopen(bodyfile, "rb");
    if (!bf) die(bodyfile, errno);
    static char body[1 << 20];
    size_t blen = fread(body, 1, sizeof body, bf);
    fclose(bf);
    while (blen && (body[blen - 1] == '\n' || body[blen - 1] == '\r'))
        blen--;
    request = malloc(blen + sizeof headers + 512);
    request_len = (size_t)sprintf(request,
                                  "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%sContent-Length: "
                                  "%zu\r\n\r\n",
                                  argv[optind], port, headers, blen);
    memcpy(request + request_len, body, blen);
    request_len += blen;

    total = (size_t)(rate * secs);
    interval_ns = (uint64_t)(1e9 / rate);
    res = calloc(total, sizeof *res);
    loop = uv_default_loop();
    settings.on_message_complete = on_complete;
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) die("timerfd_create", errno);
    uv_poll_init(loop, &tpoll, tfd);
    uv_ip4_addr("127.0.0.1", port, &addr);
    conns = calloc((size_t)nconns, sizeof *conns);
    for (int k = 0; k < nconns; k++)
        conn_open(&conns[k]);
    uv_run(loop, UV_RUN_DEFAULT);

    FILE *lf = fopen(logfile, "w");
    if (!lf) die(logfile, errno);
    uint64_t *a = malloc(total * sizeof *a), *s = malloc(total * sizeof *s);
    size_t ok = 0;
    for (size_t i = 0; i < total; i++) {
        const result *r = &res[i];
        fprintf(lf, "%llu %llu %llu %d\n", (unsigned long long)((r->sched - t0) / 1000),
                (unsigned long long)((r->done - r->sched) / 1000),
                (unsigned long long)((r->done - r->sent) / 1000), r->status);
        a[i] = (r->done - r->sched) / 1000;
        s[i] = (r->done - r->sent) / 1000;
        if (r->status >= 200 && r->status < 300) ok++;
    }
    fclose(lf);
    qsort(a, total, sizeof *a, cmp_u64);
    qsort(s, total, sizeof *s, cmp_u64);
    double elapsed = (double)(res[total - 1].done - t0) / 1e9;
    /* summary: sent 2xx achieved_rps p50 p99 p99.9 (from schedule) p50 p99 (from send), in us */
    printf("%zu %zu %.1f %llu %llu %llu %llu %llu\n", total, ok, (double)total / elapsed,
           (unsigned long long)pct(a, total, 0.5), (unsigned long long)pct(a, total, 0.99),
           (unsigned long long)pct(a, total, 0.999), (unsigned long long)pct(s, total, 0.5),
           (unsigned long long)pct(s, total, 0.99));
    return 0;
}

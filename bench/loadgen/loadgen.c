/*
 * loadgen: a one-thread epoll WebSocket load generator for Squall's benchmark suite.
 *
 * Opens N client connections to ws://HOST:PORT/PATH, does the RFC 6455 handshake, then speaks
 *   --proto centrifugo : {"id":1,"connect":{}} (anonymous), subscribe to --channel, publish
 *                        {"lg_ts":<ns>,"c":<client>} into it; answers server pings {} with {}.
 *   --proto plain      : sends the same JSON object as a text frame; the peer broadcasts it.
 *   --proto socketio   : Engine.IO 4 / Socket.IO 5 over WebSocket (path
 *                        /socket.io/?EIO=4&transport=websocket): waits for the open packet,
 *                        connects to "/" ("40"), emits 42["msg",{...}], answers pings "2"
 *                        with "3".
 *   --proto sockjs     : SockJS raw session over WebSocket (path <prefix>/<server>/<session>/
 *                        websocket, the session part is made unique per client): waits for
 *                        "o", sends ["<json>"], counts messages in a[...] frames.
 * Every delivered message carries "lg_ts" (CLOCK_MONOTONIC ns, same machine), so each reception
 * gives one latency sample. Every frame is read (buffers grow; nothing is dropped unread).
 *
 * Modes:
 *   broadcast (default): each client publishes at --rate messages/s for --warmup + --duration s;
 *                        delivered/s and latency are measured over the --duration window.
 *   --count K          : deterministic: every client publishes K messages once all are ready,
 *                        then the generator waits until every client received N*K (or timeout).
 *   --api-rate R       : fan-out: clients only subscribe; R publications/s go to the server
 *                        API (POST --api-path, keep-alive, --api-conns connections).
 *   --api-count K      : deterministic fan-out: K API publications, each client must get K.
 *
 * Prints {"event":"connected",...} once the connect phase ends (a runner may sample the
 * server's memory then: --rate 0 holds the connections idle for the duration), then one JSON
 * line with the result, including its own CPU use over the window
 * (getrusage) and, with --server-pid, the server's (from /proc), so a run shows which side
 * saturated. Client frames are masked (RFC 6455 §5.3); server frames must not be.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { PROTO_CENTRIFUGO, PROTO_PLAIN, PROTO_SOCKETIO, PROTO_SOCKJS };
enum { ST_CONNECTING, ST_HANDSHAKE, ST_CONNECT_SENT, ST_SUBSCRIBE_SENT, ST_READY, ST_CLOSED };

typedef struct {
    char *data;
    size_t start, len, cap; /* live bytes are data[start, start+len) */
} buf_t;

typedef struct {
    int fd;
    int idx;
    int state;
    int api; /* 1: a server API connection, 0: a WebSocket client */
    int busy; /* api: a request is in flight */
    buf_t in, out;
    buf_t msg; /* a fragmented message being assembled */
    int want_out;
    uint64_t received;
    uint64_t next_id;
} conn_t;

/* ---- options ---- */
static const char *o_host = "127.0.0.1";
static int o_port = 8000;
static const char *o_path = "/connection/websocket";
static int o_clients = 100;
static int o_proto = PROTO_CENTRIFUGO;
static const char *o_channel = "bench";
static double o_rate = 1.0;
static double o_duration = 5.0;
static double o_warmup = 1.0;
static int o_count = -1;
static double o_api_rate = 0.0;
static int o_api_count = -1;
static const char *o_api_path = "/api/publish";
static const char *o_api_key = "";
static int o_api_conns = 4;
static double o_connect_timeout = 30.0;
static double o_drain_timeout = 5.0;
static int o_max_pending = 200;
static int o_payload = 0; /* extra padding bytes in each message */
static int o_server_pid = 0;
static char o_src[64][64];
static int o_nsrc = 0;

/* ---- state ---- */
static int ep;
static conn_t *conns;
static conn_t *apis;
static int n_ready, n_failed, n_closed_after_ready, n_started, n_pending;
static uint64_t total_sent, total_recv, total_errors, send_backlogged, window_recv;
static uint64_t api_sent, api_ok, api_err;
static int measuring;
static uint32_t rng = 2463534242u;
static char padding[65536];

/* latency histogram: 10 us buckets up to 2 s, then 1 ms buckets up to 120 s */
#define FINE_BUCKETS 200000
#define COARSE_BUCKETS 120000
static uint64_t hist_fine[FINE_BUCKETS];
static uint64_t hist_coarse[COARSE_BUCKETS + 1];
static uint64_t hist_n;
static int64_t lat_max_ns;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint32_t xorshift(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static void die(const char *m) {
    perror(m);
    exit(2);
}

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->start + b->len + extra <= b->cap) return;
    if (b->start > 0) {
        memmove(b->data, b->data + b->start, b->len);
        b->start = 0;
        if (b->len + extra <= b->cap) return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    b->data = realloc(b->data, cap);
    if (!b->data) die("realloc");
    b->cap = cap;
}

static void buf_append(buf_t *b, const void *p, size_t n) {
    buf_reserve(b, n);
    memcpy(b->data + b->start + b->len, p, n);
    b->len += n;
}

static void buf_consume(buf_t *b, size_t n) {
    b->start += n;
    b->len -= n;
    if (b->len == 0) b->start = 0;
}

static void hist_add(int64_t ns) {
    if (ns < 0) ns = 0;
    if (ns > lat_max_ns) lat_max_ns = ns;
    int64_t us10 = ns / 10000;
    if (us10 < FINE_BUCKETS) {
        hist_fine[us10]++;
    } else {
        int64_t ms = ns / 1000000;
        hist_coarse[ms < COARSE_BUCKETS ? ms : COARSE_BUCKETS]++;
    }
    hist_n++;
}

static double hist_pct(double p) {
    if (hist_n == 0) return -1;
    uint64_t target = (uint64_t)(p * (double)hist_n);
    if (target >= hist_n) target = hist_n - 1;
    uint64_t acc = 0;
    for (int i = 0; i < FINE_BUCKETS; i++) {
        acc += hist_fine[i];
        if (acc > target) return (i + 0.5) * 0.01; /* ms */
    }
    for (int i = 0; i <= COARSE_BUCKETS; i++) {
        acc += hist_coarse[i];
        if (acc > target) return i + 0.5;
    }
    return (double)lat_max_ns / 1e6;
}

static double cpu_self(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static double cpu_pid(int pid) {
    if (pid <= 0) return -1;
    char path[64], line[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')');
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* fields after ')': state(3) ... utime(14) stime(15) */
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
        field++;
        if (field == 14) ut = strtoul(tok, NULL, 10);
        if (field == 15) {
            st = strtoul(tok, NULL, 10);
            break;
        }
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Busy seconds of each CPU so far (all processes), from /proc/stat; returns the CPU count. */
#define MAX_CPUS 64
static int cpu_busy(double *busy) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    char line[512];
    int n = 0;
    double tick = (double)sysconf(_SC_CLK_TCK);
    while (fgets(line, sizeof line, f) && n < MAX_CPUS) {
        if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9') continue;
        unsigned long long v[10] = {0};
        int k = sscanf(line + 3, "%*d %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                       &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
        if (k < 4) continue;
        /* user nice system idle iowait irq softirq steal: busy = all but idle and iowait */
        busy[n++] = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / tick;
    }
    fclose(f);
    return n;
}

/* ---- output ---- */

static void set_events(conn_t *c) {
    struct epoll_event ev = {.events = EPOLLIN | (c->out.len ? EPOLLOUT : 0), .data.ptr = c};
    int want = c->out.len ? 1 : 0;
    if (want != c->want_out) {
        c->want_out = want;
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void conn_close(conn_t *c, int failed) {
    if (c->state == ST_CLOSED) return;
    if (c->state == ST_READY && !c->api) {
        n_ready--;
        n_closed_after_ready++;
    } else if (!c->api) {
        (void)failed; /* a client that closes before it is ready failed, whatever the cause */
        n_failed++;
        n_pending--;
    }
    if (c->api) c->busy = 0;
    c->state = ST_CLOSED;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void flush_out(conn_t *c) {
    while (c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out.start, c->out.len);
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            conn_close(c, 1);
            return;
        }
    }
    set_events(c);
}

/* Queue one masked client frame (RFC 6455 §5.2, §5.3). */
static void send_frame(conn_t *c, int opcode, const char *payload, size_t len) {
    unsigned char hdr[14];
    size_t h = 0;
    hdr[h++] = 0x80 | (unsigned char)opcode;
    if (len < 126) {
        hdr[h++] = 0x80 | (unsigned char)len;
    } else if (len < 65536) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (unsigned char)(len >> 8);
        hdr[h++] = (unsigned char)len;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) hdr[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    uint32_t key = xorshift();
    unsigned char mask[4];
    memcpy(mask, &key, 4);
    memcpy(hdr + h, mask, 4);
    h += 4;
    buf_append(&c->out, hdr, h);
    buf_reserve(&c->out, len);
    unsigned char *dst = (unsigned char *)c->out.data + c->out.start + c->out.len;
    for (size_t i = 0; i < len; i++) dst[i] = (unsigned char)payload[i] ^ mask[i & 3];
    c->out.len += len;
}

static void send_text(conn_t *c, const char *s, size_t n) {
    send_frame(c, 1, s, n);
    flush_out(c);
}

static void publish(conn_t *c) {
    char msg[256 + sizeof padding];
    int n;
    int64_t t = now_ns();
    const char *pad = o_payload ? padding : "";
    if (o_proto == PROTO_CENTRIFUGO) {
        n = snprintf(msg, sizeof msg,
                     "{\"id\":%llu,\"publish\":{\"channel\":\"%s\",\"data\":{\"lg_ts\":%lld,"
                     "\"c\":%d,\"p\":\"%s\"}}}",
                     (unsigned long long)c->next_id++, o_channel, (long long)t, c->idx, pad);
    } else if (o_proto == PROTO_SOCKETIO) {
        n = snprintf(msg, sizeof msg, "42[\"msg\",{\"lg_ts\":%lld,\"c\":%d,\"p\":\"%s\"}]",
                     (long long)t, c->idx, pad);
    } else if (o_proto == PROTO_SOCKJS) {
        n = snprintf(msg, sizeof msg,
                     "[\"{\\\"lg_ts\\\":%lld,\\\"c\\\":%d,\\\"p\\\":\\\"%s\\\"}\"]",
                     (long long)t, c->idx, pad);
    } else {
        n = snprintf(msg, sizeof msg, "{\"lg_ts\":%lld,\"c\":%d,\"p\":\"%s\"}", (long long)t,
                     c->idx, pad);
    }
    if (c->out.len > (1 << 20)) {
        send_backlogged++;
    }
    send_text(c, msg, (size_t)n);
    total_sent++;
}

/* ---- message handling ---- */

/* Next "lg_ts" key at or after p, or NULL; returns the position just after the name. The
 * key may be quoted plainly ("lg_ts") or inside a JSON string (\"lg_ts\", SockJS). */
static const char *find_ts(const char *p, const char *end) {
    while (p + 5 <= end) {
        const char *q = memmem(p, (size_t)(end - p), "lg_ts", 5);
        if (!q) return NULL;
        if (q > p && q[-1] == '"') return q + 5;
        p = q + 5;
    }
    return NULL;
}

static long long reply_id(const char *line, const char *end) {
    /* {"id":N,...} as the first key; servers may put spaces after ':' */
    const char *p = line;
    while (p < end && (*p == ' ' || *p == '{')) p++;
    if (end - p < 5 || memcmp(p, "\"id\"", 4) != 0) return -1;
    p += 4;
    while (p < end && (*p == ' ' || *p == ':')) p++;
    return strtoll(p, NULL, 10);
}

static void on_ready(conn_t *c) {
    c->state = ST_READY;
    n_ready++;
    n_pending--;
}

static void handle_line(conn_t *c, const char *p, const char *end, int64_t now) {
    /* every occurrence of "lg_ts" is one delivered message */
    int seen = 0;
    const char *q = p;
    while ((q = find_ts(q, end)) != NULL) {
        while (q < end && (*q == ':' || *q == ' ' || *q == '"' || *q == '\\')) q++;
        long long ts = strtoll(q, NULL, 10);
        seen++;
        c->received++;
        total_recv++;
        if (measuring) {
            window_recv++;
            hist_add(now - ts);
        }
    }
    if (seen || o_proto != PROTO_CENTRIFUGO) return;
    size_t n = (size_t)(end - p);
    if (n == 2 && p[0] == '{' && p[1] == '}') { /* server ping: answer with pong {} */
        send_text(c, "{}", 2);
        return;
    }
    if (memmem(p, n, "\"error\"", 7)) {
        total_errors++;
        if (total_errors <= 5) fprintf(stderr, "loadgen: error reply: %.*s\n", (int)n, p);
    }
    long long id = reply_id(p, end);
    if (c->state == ST_CONNECT_SENT && id == 1) {
        if (memmem(p, n, "\"error\"", 7)) {
            conn_close(c, 1);
            return;
        }
        char sub[300];
        int k = snprintf(sub, sizeof sub, "{\"id\":2,\"subscribe\":{\"channel\":\"%s\"}}",
                         o_channel);
        c->state = ST_SUBSCRIBE_SENT;
        send_text(c, sub, (size_t)k);
    } else if (c->state == ST_SUBSCRIBE_SENT && id == 2) {
        if (memmem(p, n, "\"error\"", 7)) {
            conn_close(c, 1);
            return;
        }
        on_ready(c);
    }
}

static void handle_socketio(conn_t *c, const char *p, size_t n, int64_t now) {
    if (n == 1 && p[0] == '2') { /* Engine.IO ping -> pong */
        send_text(c, "3", 1);
    } else if (n >= 1 && p[0] == '0' && c->state == ST_CONNECT_SENT) { /* open -> connect */
        c->state = ST_SUBSCRIBE_SENT;
        send_text(c, "40", 2);
    } else if (n >= 2 && p[0] == '4' && p[1] == '0' && c->state == ST_SUBSCRIBE_SENT) {
        on_ready(c);
    } else if (n >= 2 && p[0] == '4' && p[1] == '4') { /* connect_error */
        total_errors++;
        conn_close(c, 1);
    } else if (n >= 1 && p[0] == '1') { /* Engine.IO close */
        conn_close(c, 0);
    } else {
        handle_line(c, p, p + n, now);
    }
}

static void handle_sockjs(conn_t *c, const char *p, size_t n, int64_t now) {
    if (n == 0 || p[0] == 'h') return; /* heartbeat */
    if (p[0] == 'o') {
        if (c->state == ST_CONNECT_SENT) on_ready(c);
    } else if (p[0] == 'c') {
        conn_close(c, 0);
    } else {
        handle_line(c, p, p + n, now);
    }
}

static void handle_message(conn_t *c, const char *p, size_t n, int64_t now) {
    const char *end = p + n;
    if (o_proto == PROTO_SOCKETIO) {
        handle_socketio(c, p, n, now);
        return;
    }
    if (o_proto == PROTO_SOCKJS) {
        handle_sockjs(c, p, n, now);
        return;
    }
    /* Centrifugo batches commands/replies/pushes separated by newlines */
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (le > p) handle_line(c, p, le, now);
        if (c->state == ST_CLOSED) return;
        p = le + 1;
    }
}

/* Parse server frames in c->in. Returns -1 if the connection was closed. */
static int parse_frames(conn_t *c, int64_t now) {
    for (;;) {
        size_t avail = c->in.len;
        const unsigned char *b = (const unsigned char *)c->in.data + c->in.start;
        if (avail < 2) return 0;
        int fin = b[0] & 0x80, op = b[0] & 0x0f, masked = b[1] & 0x80;
        uint64_t len = b[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (avail < 4) return 0;
            len = ((uint64_t)b[2] << 8) | b[3];
            h = 4;
        } else if (len == 127) {
            if (avail < 10) return 0;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | b[2 + i];
            h = 10;
        }
        if (masked) h += 4; /* a server must not mask; tolerate it anyway */
        if (avail < h + len) {
            buf_reserve(&c->in, h + len - avail);
            return 0;
        }
        char *payload = c->in.data + c->in.start + h;
        if (masked) {
            const unsigned char *mk = b + h - 4;
            for (uint64_t i = 0; i < len; i++) payload[i] ^= mk[i & 3];
        }
        if (op == 8) { /* close */
            conn_close(c, 0);
            return -1;
        } else if (op == 9) { /* ping -> pong */
            char tmp[126];
            size_t pl = len < 125 ? len : 125;
            memcpy(tmp, payload, pl);
            send_frame(c, 10, tmp, pl);
            flush_out(c);
            if (c->state == ST_CLOSED) return -1;
        } else if (op == 10) {
            /* pong: nothing */
        } else if (op == 0 || op == 1 || op == 2) {
            if (!fin || c->msg.len) {
                buf_append(&c->msg, payload, len);
                if (fin) {
                    handle_message(c, c->msg.data + c->msg.start, c->msg.len, now);
                    c->msg.len = 0;
                    c->msg.start = 0;
                }
            } else {
                handle_message(c, payload, len, now);
            }
            if (c->state == ST_CLOSED) return -1;
        }
        buf_consume(&c->in, h + len);
    }
}

static void start_ws(conn_t *c) {
    char req[1024], key[25];
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 21; i++) key[i] = b64[xorshift() & 63];
    key[21] = 'A'; /* 16 random bytes -> 22 chars + "==" */
    key[22] = '=';
    key[23] = '=';
    key[24] = 0;
    key[21] = b64[xorshift() & 0x30];
    char path[512];
    if (o_proto == PROTO_SOCKJS) /* <prefix>/<server id>/<session id>/websocket */
        snprintf(path, sizeof path, "%s/%03d/lg%08x%06d/websocket", o_path, c->idx % 1000,
                 xorshift(), c->idx);
    else
        snprintf(path, sizeof path, "%s", o_path);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, o_host, o_port, key);
    buf_append(&c->out, req, (size_t)n);
    c->state = ST_HANDSHAKE;
    flush_out(c);
}

static void handle_handshake(conn_t *c, int64_t now) {
    const char *b = c->in.data + c->in.start;
    const char *e = memmem(b, c->in.len, "\r\n\r\n", 4);
    if (!e) return;
    if (c->in.len < 12 || memcmp(b + 9, "101", 3) != 0) {
        if (n_failed < 3)
            fprintf(stderr, "loadgen: handshake refused: %.*s\n",
                    (int)(c->in.len < 200 ? c->in.len : 200), b);
        conn_close(c, 1);
        return;
    }
    buf_consume(&c->in, (size_t)(e + 4 - b));
    if (o_proto == PROTO_CENTRIFUGO) {
        c->state = ST_CONNECT_SENT;
        send_text(c, "{\"id\":1,\"connect\":{}}", 21);
    } else if (o_proto == PROTO_SOCKETIO || o_proto == PROTO_SOCKJS) {
        c->state = ST_CONNECT_SENT; /* wait for the open packet / frame */
    } else {
        on_ready(c);
    }
    if (c->state != ST_CLOSED && c->in.len) parse_frames(c, now);
}

/* ---- server API connection (fan-out) ---- */

static void api_request(conn_t *a) {
    char body[256 + sizeof padding], req[512 + sizeof padding];
    const char *pad = o_payload ? padding : "";
    int bl = snprintf(body, sizeof body,
                      "{\"channel\":\"%s\",\"data\":{\"lg_ts\":%lld,\"c\":-1,\"p\":\"%s\"}}",
                      o_channel, (long long)now_ns(), pad);
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     "X-API-Key: %s\r\nContent-Length: %d\r\n\r\n%s",
                     o_api_path, o_host, o_port, o_api_key, bl, body);
    a->busy = 1;
    buf_append(&a->out, req, (size_t)n);
    api_sent++;
    flush_out(a);
}

static void api_read(conn_t *a) {
    for (;;) {
        const char *b = a->in.data + a->in.start;
        const char *e = a->in.len ? memmem(b, a->in.len, "\r\n\r\n", 4) : NULL;
        if (!e) return;
        size_t hl = (size_t)(e + 4 - b);
        long clen = 0;
        const char *cl = memmem(b, hl, "ontent-Length:", 14);
        if (!cl) cl = memmem(b, hl, "ontent-length:", 14);
        if (cl) clen = strtol(cl + 14, NULL, 10);
        if (a->in.len < hl + (size_t)clen) return;
        int ok = a->in.len >= 12 && memcmp(b + 9, "200", 3) == 0 &&
                 !memmem(b + hl, (size_t)clen, "\"error\"", 7);
        if (ok) {
            api_ok++;
        } else {
            api_err++;
            if (api_err <= 3) fprintf(stderr, "loadgen: api error: %.*s\n", (int)(hl + clen), b);
        }
        buf_consume(&a->in, hl + (size_t)clen);
        a->busy = 0;
    }
}

static int open_socket(int idx) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (o_nsrc) {
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0};
        inet_pton(AF_INET, o_src[idx % o_nsrc], &src.sin_addr);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            close(fd);
            return -1;
        }
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o_port)};
    inet_pton(AF_INET, o_host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void start_conn(conn_t *c) {
    c->fd = open_socket(c->idx);
    n_started++;
    n_pending++;
    if (c->fd < 0) {
        c->state = ST_CLOSED;
        n_failed++;
        n_pending--;
        return;
    }
    c->state = ST_CONNECTING;
    c->want_out = 1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void on_event(conn_t *c, uint32_t events, int64_t now) {
    if (c->state == ST_CLOSED) return;
    if (c->state == ST_CONNECTING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            if (n_failed < 3) fprintf(stderr, "loadgen: connect: %s\n", strerror(err));
            conn_close(c, 1);
            return;
        }
        if (c->api) {
            c->state = ST_READY;
            set_events(c);
        } else {
            start_ws(c);
        }
        if (c->state == ST_CLOSED) return;
    }
    if (events & EPOLLOUT) {
        flush_out(c);
        if (c->state == ST_CLOSED) return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (;;) {
            buf_reserve(&c->in, 65536);
            size_t room = c->in.cap - c->in.start - c->in.len;
            ssize_t n = read(c->fd, c->in.data + c->in.start + c->in.len, room);
            if (n > 0) {
                c->in.len += (size_t)n;
                if (c->api) {
                    api_read(c);
                } else if (c->state == ST_HANDSHAKE) {
                    handle_handshake(c, now);
                } else if (parse_frames(c, now) < 0) {
                    return;
                }
                if (c->state == ST_CLOSED) return;
                if ((size_t)n < room) break; /* drained for now; epoll is level-triggered */
            } else if (n == 0) {
                conn_close(c, c->state != ST_READY);
                return;
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            } else if (errno == EINTR) {
                continue;
            } else {
                conn_close(c, 1);
                return;
            }
        }
    }
}

static void poll_once(int timeout_ms) {
    struct epoll_event evs[1024];
    int n = epoll_wait(ep, evs, 1024, timeout_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    int64_t now = now_ns();
    for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events, now);
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen [--host H] [--port P] [--path /connection/websocket] [--clients N]\n"
            "  [--proto centrifugo|plain|socketio|sockjs] [--channel C] [--rate R] [--duration S] [--warmup S]\n"
            "  [--count K] [--api-rate R | --api-count K] [--api-path P] [--api-key K]\n"
            "  [--api-conns N] [--connect-timeout S] [--drain-timeout S] [--max-pending N]\n"
            "  [--payload BYTES] [--server-pid PID] [--src 127.0.0.2,127.0.0.3]\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option opts[] = {
        {"host", 1, 0, 'h'},          {"port", 1, 0, 'p'},
        {"path", 1, 0, 'P'},          {"clients", 1, 0, 'n'},
        {"proto", 1, 0, 'x'},         {"channel", 1, 0, 'c'},
        {"rate", 1, 0, 'r'},          {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'w'},        {"count", 1, 0, 'k'},
        {"api-rate", 1, 0, 'a'},      {"api-count", 1, 0, 'A'},
        {"api-path", 1, 0, 'u'},      {"api-key", 1, 0, 'K'},
        {"api-conns", 1, 0, 'C'},     {"connect-timeout", 1, 0, 't'},
        {"drain-timeout", 1, 0, 'D'}, {"max-pending", 1, 0, 'm'},
        {"payload", 1, 0, 'l'},       {"server-pid", 1, 0, 's'},
        {"src", 1, 0, 'S'},           {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': o_host = optarg; break;
        case 'p': o_port = atoi(optarg); break;
        case 'P': o_path = optarg; break;
        case 'n': o_clients = atoi(optarg); break;
        case 'x':
            if (strcmp(optarg, "centrifugo") == 0) o_proto = PROTO_CENTRIFUGO;
            else if (strcmp(optarg, "plain") == 0) o_proto = PROTO_PLAIN;
            else if (strcmp(optarg, "socketio") == 0) o_proto = PROTO_SOCKETIO;
            else if (strcmp(optarg, "sockjs") == 0) o_proto = PROTO_SOCKJS;
            else usage();
            break;
        case 'c': o_channel = optarg; break;
        case 'r': o_rate = atof(optarg); break;
        case 'd': o_duration = atof(optarg); break;
        case 'w': o_warmup = atof(optarg); break;
        case 'k': o_count = atoi(optarg); break;
        case 'a': o_api_rate = atof(optarg); break;
        case 'A': o_api_count = atoi(optarg); break;
        case 'u': o_api_path = optarg; break;
        case 'K': o_api_key = optarg; break;
        case 'C': o_api_conns = atoi(optarg); break;
        case 't': o_connect_timeout = atof(optarg); break;
        case 'D': o_drain_timeout = atof(optarg); break;
        case 'm': o_max_pending = atoi(optarg); break;
        case 'l': o_payload = atoi(optarg); break;
        case 's': o_server_pid = atoi(optarg); break;
        case 'S': {
            char *s = strdup(optarg);
            for (char *t = strtok(s, ","); t && o_nsrc < 64; t = strtok(NULL, ","))
                snprintf(o_src[o_nsrc++], 64, "%s", t);
            break;
        }
        default: usage();
        }
    }
    if (o_clients < 1 || o_payload < 0 || o_payload >= (int)sizeof padding) usage();
    memset(padding, 'x', (size_t)o_payload);
    padding[o_payload] = 0;
    int fanout = o_api_rate > 0 || o_api_count >= 0;
    rng ^= (uint32_t)getpid();

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    conns = calloc((size_t)o_clients, sizeof *conns);
    for (int i = 0; i < o_clients; i++) {
        conns[i].idx = i;
        conns[i].fd = -1;
        conns[i].state = -1;
        conns[i].next_id = 3;
    }

    /* ---- connect phase: at most --max-pending handshakes in flight ---- */
    int64_t t0 = now_ns();
    int64_t deadline = t0 + (int64_t)(o_connect_timeout * 1e9);
    int next = 0;
    while (n_ready + n_failed + n_closed_after_ready < o_clients && now_ns() < deadline) {
        while (next < o_clients && n_pending < o_max_pending) start_conn(&conns[next++]);
        poll_once(10);
    }
    double connect_s = (now_ns() - t0) / 1e9;
    int connected = n_ready;
    /* a progress line before the result, for runners that sample the server meanwhile */
    printf("{\"event\":\"connected\",\"connected\":%d,\"failed\":%d}\n", connected, n_failed);
    fflush(stdout);

    if (fanout) {
        apis = calloc((size_t)o_api_conns, sizeof *apis);
        for (int i = 0; i < o_api_conns; i++) {
            apis[i].idx = i;
            apis[i].api = 1;
            apis[i].fd = open_socket(i);
            if (apis[i].fd < 0) die("api connect");
            apis[i].state = ST_CONNECTING;
            apis[i].want_out = 1;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = &apis[i]};
            epoll_ctl(ep, EPOLL_CTL_ADD, apis[i].fd, &ev);
        }
        int64_t d = now_ns() + 5000000000LL;
        for (;;) {
            int up = 0;
            for (int i = 0; i < o_api_conns; i++) up += apis[i].state == ST_READY;
            if (up == o_api_conns || now_ns() > d) break;
            poll_once(10);
        }
    }

    /* ---- load phase ---- */
    double cpu0 = 0, cpu1 = 0, scpu0 = 0, scpu1 = 0;
    double busy0[MAX_CPUS] = {0}, busy1[MAX_CPUS] = {0};
    int ncpu = 0;
    int64_t w0 = 0, w1 = 0;
    uint64_t expected = 0;
    int deterministic = o_count >= 0 || o_api_count >= 0;
    int64_t start = now_ns();
    if (deterministic) {
        /* every ready client publishes K messages (or K API publications), then drain */
        measuring = 1;
        w0 = start;
        cpu0 = cpu_self();
        scpu0 = cpu_pid(o_server_pid);
        ncpu = cpu_busy(busy0);
        if (fanout) {
            int left = o_api_count;
            while (left > 0 && now_ns() < start + (int64_t)(o_drain_timeout * 1e9)) {
                for (int i = 0; i < o_api_conns && left > 0; i++)
                    if (apis[i].state == ST_READY && !apis[i].busy) {
                        api_request(&apis[i]);
                        left--;
                    }
                poll_once(1);
            }
            expected = (uint64_t)o_api_count * (uint64_t)n_ready;
        } else {
            for (int k = 0; k < o_count; k++)
                for (int i = 0; i < o_clients; i++)
                    if (conns[i].state == ST_READY) publish(&conns[i]);
            expected = total_sent * (uint64_t)n_ready;
        }
    } else {
        int64_t end = start + (int64_t)((o_warmup + o_duration) * 1e9);
        int64_t wstart = start + (int64_t)(o_warmup * 1e9);
        double total_rate = fanout ? o_api_rate : o_rate * o_clients;
        uint64_t due_sent = 0;
        int rr = 0;
        for (;;) {
            int64_t now = now_ns();
            if (!measuring && now >= wstart) {
                measuring = 1;
                w0 = now;
                cpu0 = cpu_self();
                scpu0 = cpu_pid(o_server_pid);
                ncpu = cpu_busy(busy0);
            }
            if (now >= end) break;
            uint64_t due = (uint64_t)((double)(now - start) / 1e9 * total_rate);
            if (fanout) {
                while (due_sent < due) {
                    conn_t *a = NULL;
                    for (int i = 0; i < o_api_conns; i++)
                        if (apis[i].state == ST_READY && !apis[i].busy) {
                            a = &apis[i];
                            break;
                        }
                    if (!a) break; /* all busy: the API is saturated; catch up later */
                    api_request(a);
                    due_sent++;
                    expected += (uint64_t)n_ready;
                }
            } else {
                int guard = 0;
                while (due_sent < due && n_ready > 0 && guard < o_clients) {
                    conn_t *c = &conns[rr];
                    rr = (rr + 1) % o_clients;
                    if (c->state != ST_READY) {
                        guard++;
                        continue;
                    }
                    guard = 0;
                    publish(c);
                    due_sent++;
                    expected += (uint64_t)n_ready;
                }
            }
            poll_once(1);
        }
    }
    w1 = now_ns();
    cpu1 = cpu_self();
    scpu1 = cpu_pid(o_server_pid);
    cpu_busy(busy1);
    uint64_t in_window = window_recv;
    if (!deterministic) measuring = 0;

    /* ---- drain: read everything still in flight ---- */
    int64_t dd = now_ns() + (int64_t)(o_drain_timeout * 1e9);
    while (total_recv < expected && now_ns() < dd && n_ready > 0) poll_once(5);
    if (deterministic) {
        w1 = now_ns();
        cpu1 = cpu_self();
        scpu1 = cpu_pid(o_server_pid);
        cpu_busy(busy1);
        in_window = window_recv;
    }

    double window = (w1 - w0) / 1e9;
    uint64_t min_recv = UINT64_MAX, max_recv = 0;
    for (int i = 0; i < o_clients; i++) {
        if (conns[i].state != ST_READY) continue;
        if (conns[i].received < min_recv) min_recv = conns[i].received;
        if (conns[i].received > max_recv) max_recv = conns[i].received;
    }
    if (min_recv == UINT64_MAX) min_recv = 0;
    printf("{\"clients\":%d,\"connected\":%d,\"ready_at_end\":%d,\"failed\":%d,"
           "\"closed\":%d,\"connect_s\":%.3f,\"window_s\":%.3f,\"sent\":%llu,"
           "\"api_sent\":%llu,\"api_ok\":%llu,\"api_errors\":%llu,"
           "\"received\":%llu,\"expected\":%llu,\"missing\":%lld,\"received_in_window\":%llu,"
           "\"delivered_per_s\":%.1f,\"sent_per_s\":%.1f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"samples\":%llu,"
           "\"min_per_client\":%llu,\"max_per_client\":%llu,\"errors\":%llu,"
           "\"send_backlogged\":%llu,\"gen_cpu\":%.3f,\"server_cpu\":%.3f,",
           o_clients, connected, n_ready, n_failed, n_closed_after_ready, connect_s, window,
           (unsigned long long)total_sent, (unsigned long long)api_sent,
           (unsigned long long)api_ok, (unsigned long long)api_err,
           (unsigned long long)total_recv, (unsigned long long)expected,
           (long long)expected - (long long)total_recv, (unsigned long long)in_window,
           window > 0 ? in_window / window : 0.0,
           window > 0 ? (fanout ? api_sent : total_sent) / (window + o_warmup) : 0.0,
           hist_pct(0.50), hist_pct(0.99), lat_max_ns / 1e6, (unsigned long long)hist_n,
           (unsigned long long)min_recv, (unsigned long long)max_recv,
           (unsigned long long)total_errors, (unsigned long long)send_backlogged,
           window > 0 ? (cpu1 - cpu0) / window : 0.0,
           (o_server_pid > 0 && window > 0) ? (scpu1 - scpu0) / window : -1.0);
    /* how busy each CPU was over the window, all processes: shows interference */
    printf("\"cpu_busy\":[");
    for (int i = 0; i < ncpu; i++)
        printf("%s%.3f", i ? "," : "", window > 0 ? (busy1[i] - busy0[i]) / window : 0.0);
    printf("]}\n");
    fflush(stdout);
    return 0;
}

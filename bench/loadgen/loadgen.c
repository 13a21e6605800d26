/*
 * loadgen: a one-thread epoll load generator for Squall's benchmark suite.
 *
 * Opens N client connections to HOST:PORT and, over --transport websocket (the default; RFC
 * 6455 handshake on --path), speaks
 *   --proto centrifugo : {"id":1,"connect":{}} (anonymous, or {"token":..} with --token),
 *                        subscribe to --channel, publish {"lg_ts":<ns>,"c":<client>} into it;
 *                        answers server pings {} with {}.
 *   --proto plain      : sends the same JSON object as a text frame; the peer broadcasts it.
 *   --proto socketio   : Engine.IO 4 / Socket.IO 5 over WebSocket (path
 *                        /socket.io/?EIO=4&transport=websocket): waits for the open packet,
 *                        connects to "/" ("40"), emits 42["msg",{...}], answers pings "2"
 *                        with "3".
 *   --proto sockjs     : SockJS raw session over WebSocket (path <prefix>/<server>/<session>/
 *                        websocket, the session part is made unique per client): waits for
 *                        "o", sends ["<json>"], counts messages in a[...] frames.
 * or reads an HTTP streaming response (readers only: publications come from the server API):
 *   --transport sse           : GET --path (Accept: text/event-stream); with --proto
 *                               centrifugo it is Squall's uni_sse, the connect request
 *                               {"token":--token} goes in ?cf_connect= (the token's channels
 *                               claim subscribes the client) and the client is ready at the
 *                               connect push; with --proto plain it is ready at the 200.
 *                               Every data: line is read for lg_ts.
 *   --transport xhr_streaming : SockJS xhr_streaming: POST <path>/<server>/<session>/
 *                               xhr_streaming gets the 2 KiB "h" prelude, then "o", "h", a[...]
 *                               and c[...] frames, each ended by \n. With --proto centrifugo
 *                               (Squall's /connection/sockjs) the connect and subscribe
 *                               commands and pongs go through POST .../xhr_send on a pool of
 *                               --send-conns keep-alive connections; with --proto sockjs (a
 *                               SockJS peer) the client is ready at "o". When the server ends
 *                               the response (response_limit), the client POSTs xhr_streaming
 *                               again on the same session (a new TCP connection when the
 *                               server closed the old one) and reads on: the session queued
 *                               what was published meanwhile.
 *   The response body may be chunked, Content-Length or read-until-close.
 * Every delivered message carries "lg_ts" (CLOCK_MONOTONIC ns, same machine), so each reception
 * gives one latency sample. Every frame is read (buffers grow; nothing is dropped unread).
 *
 * Modes:
 *   broadcast (default): each client publishes at --rate messages/s for --warmup + --duration s;
 *                        delivered/s and latency are measured over the --duration window.
 *   --rooms R          : many channels: client i joins room i mod R (centrifugo: channel
 *                        <channel>.<room>; plain: path <path>?room=<room>) and publishes into
 *                        it; each message reaches the clients of that room only.
 *   --count K          : deterministic: every client publishes K messages once all are ready,
 *                        then the generator waits until every message reached every member
 *                        of its room (or timeout).
 *   --api-rate R       : fan-out: clients only subscribe; R publications/s go to the server
 *                        API (POST --api-path, keep-alive, --api-conns connections).
 *   --api-count K      : deterministic fan-out: K API publications, each client must get K.
 *   --storm            : connection storm: --storm-inflight connections at a time, each does
 *                        the WebSocket handshake, sends its credentials (centrifugo: connect
 *                        with --token; plain: {"token":--token} as the first message), waits
 *                        for the reply, sends a close frame and waits for the server to close
 *                        the TCP connection; a finished slot starts the next connection at
 *                        once, for --warmup + --duration s. Prints connects/s over the window,
 *                        p50/p99 connect latency (TCP connect to reply) and the failures.
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
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { PROTO_CENTRIFUGO, PROTO_PLAIN, PROTO_SOCKETIO, PROTO_SOCKJS };
enum { TR_WEBSOCKET, TR_SSE, TR_XHR };
enum {
    ST_CONNECTING,
    ST_HANDSHAKE, /* websocket: upgrade sent; sse/xhr_streaming: waiting to be open */
    ST_CONNECT_SENT,
    ST_SUBSCRIBE_SENT,
    ST_READY,
    ST_CLOSING, /* storm: close frame sent, waiting for the server to close */
    ST_CLOSED
};
enum { K_CLIENT, K_API, K_SENDER };
enum { H_HEAD, H_BODY };                            /* HTTP response reader: where we are */
enum { B_LENGTH, B_CHUNKED, B_EOF };                /* how the body ends */
enum { CH_SIZE, CH_DATA, CH_CRLF, CH_TRAILER };     /* chunked decoder */
enum { SEND_CONNECT, SEND_SUBSCRIBE, SEND_PONG };   /* xhr_send requests */

typedef struct {
    char *data;
    size_t start, len, cap; /* live bytes are data[start, start+len) */
} buf_t;

typedef struct conn conn_t;
struct conn {
    int fd;
    int idx;
    int state;
    int kind;   /* K_CLIENT, K_API (server API publisher) or K_SENDER (xhr_send pool) */
    int tcp_up; /* the TCP connect completed */
    int busy;   /* api, sender: a request is in flight */
    buf_t in, out;
    buf_t msg; /* websocket: a fragmented message being assembled; http: decoded body */
    int want_out;
    uint64_t received;
    uint64_t next_id;
    int room;
    int64_t t_start; /* storm: when the TCP connect began, then when the close was sent */
    /* HTTP response reader (sse, xhr_streaming, xhr_send) */
    int hphase, bmode, cstate, close_after, status;
    int64_t left; /* B_LENGTH: body bytes left; B_CHUNKED: bytes left in this chunk */
    int reopen;   /* queued for reconnect after this batch of events */
    char *sess;   /* xhr_streaming: <prefix>/<server>/<session> */
    conn_t *for_client; /* sender: whose request is in flight */
    int req_kind;
};

/* ---- options ---- */
static const char *o_host = "127.0.0.1";
static int o_port = 8000;
static const char *o_path = "/connection/websocket";
static int o_clients = 100;
static int o_proto = PROTO_CENTRIFUGO;
static int o_transport = TR_WEBSOCKET;
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
static int o_rooms = 0;
static int o_storm = 0;
static int o_storm_inflight = 200;
static const char *o_token = NULL;
static int o_send_conns = 16;

/* ---- state ---- */
static int ep;
static conn_t *conns;
static conn_t *apis;
static conn_t *senders;
static int n_ready, n_failed, n_closed_after_ready, n_started, n_pending;
static int *room_ready; /* ready clients per room (--rooms) */
static uint64_t total_sent, total_recv, total_errors, send_backlogged, window_recv;
static uint64_t api_sent, api_ok, api_err;
static uint64_t stream_reopens, xhr_sent, xhr_errors;
static uint64_t storm_ok, storm_failed, storm_ok_window, storm_failed_window;
static int measuring;
static uint32_t rng = 2463534242u;
static char padding[65536];
static conn_t **reopen_list;
static int n_reopen, cap_reopen;

/* xhr_send requests waiting for a free sender connection (a ring) */
typedef struct {
    conn_t *c;
    int kind;
} sendreq_t;
static sendreq_t *sq;
static size_t sq_head, sq_len, sq_cap;

/* latency histogram: 10 us buckets up to 2 s, then 1 ms buckets up to 120 s */
#define FINE_BUCKETS 200000
#define COARSE_BUCKETS 120000
static uint64_t hist_fine[FINE_BUCKETS];
static uint64_t hist_coarse[COARSE_BUCKETS + 1];
static uint64_t hist_n;
static int64_t lat_max_ns;

static void conn_close(conn_t *c, int failed);
static void flush_out(conn_t *c);
static void pump_senders(void);
static void on_ready(conn_t *c);

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

static void buf_clear(buf_t *b) {
    b->start = 0;
    b->len = 0;
}

/* Case-insensitive search of an ASCII needle in n bytes; NULL when absent. */
static const char *find_ci(const char *h, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(h + i, needle, k) == 0) return h + i;
    return NULL;
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

/* The channel a client subscribes and publishes to: <channel>.<room> with --rooms. */
static const char *chan_of(const conn_t *c, char *buf, size_t size) {
    if (!o_rooms) return o_channel;
    snprintf(buf, size, "%s.%d", o_channel, c->room);
    return buf;
}

/* ---- sockets ---- */

static void set_events(conn_t *c) {
    struct epoll_event ev = {.events = EPOLLIN | (c->out.len ? EPOLLOUT : 0), .data.ptr = c};
    int want = c->out.len ? 1 : 0;
    if (want != c->want_out) {
        c->want_out = want;
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
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

/* Open c's TCP connection (again) and watch it; returns -1 when the socket failed. */
static int conn_open(conn_t *c) {
    c->fd = open_socket(c->idx);
    if (c->fd < 0) return -1;
    c->tcp_up = 0;
    c->want_out = 1;
    c->hphase = H_HEAD;
    buf_clear(&c->in);
    buf_clear(&c->out);
    buf_clear(&c->msg);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

static void fd_close(conn_t *c) {
    if (c->fd < 0) return;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void conn_close(conn_t *c, int failed) {
    if (c->state == ST_CLOSED) return;
    (void)failed; /* a client that closes before it is ready failed, whatever the cause */
    if (c->kind == K_CLIENT && o_storm) {
        if (c->state != ST_CLOSING) { /* closed before the connect reply */
            storm_failed++;
            if (measuring) storm_failed_window++;
        }
    } else if (c->kind == K_CLIENT && c->state == ST_READY) {
        n_ready--;
        n_closed_after_ready++;
        if (o_rooms) room_ready[c->room]--;
    } else if (c->kind == K_CLIENT) {
        n_failed++;
        n_pending--;
    }
    c->busy = 0;
    c->state = ST_CLOSED;
    fd_close(c);
}

/* Reconnect c once the current batch of events is handled (a stale event of this batch
 * must not reach the new socket). */
static void reopen_later(conn_t *c) {
    if (c->reopen) return;
    c->reopen = 1;
    fd_close(c);
    if (n_reopen == cap_reopen) {
        cap_reopen = cap_reopen ? cap_reopen * 2 : 64;
        reopen_list = realloc(reopen_list, (size_t)cap_reopen * sizeof *reopen_list);
        if (!reopen_list) die("realloc");
    }
    reopen_list[n_reopen++] = c;
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
    char msg[512 + sizeof padding], chan[256];
    int n;
    int64_t t = now_ns();
    const char *pad = o_payload ? padding : "";
    if (o_proto == PROTO_CENTRIFUGO) {
        n = snprintf(msg, sizeof msg,
                     "{\"id\":%llu,\"publish\":{\"channel\":\"%s\",\"data\":{\"lg_ts\":%lld,"
                     "\"c\":%d,\"p\":\"%s\"}}}",
                     (unsigned long long)c->next_id++, chan_of(c, chan, sizeof chan),
                     (long long)t, c->idx, pad);
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

/* Count (and time) every delivered message in [p, end): each "lg_ts" is one. */
static int count_ts(conn_t *c, const char *p, const char *end, int64_t now) {
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
    return seen;
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
    if (o_rooms) room_ready[c->room]++;
}

/* Storm: the connect succeeded; close the WebSocket (close frame 1000) and wait for the
 * server to close the TCP connection (RFC 6455 §7.1.1: the server closes first). */
static void storm_success(conn_t *c, int64_t now) {
    storm_ok++;
    if (measuring) {
        storm_ok_window++;
        hist_add(now - c->t_start);
    }
    c->state = ST_CLOSING;
    c->t_start = now;
    send_frame(c, 8, "\x03\xe8", 2);
    flush_out(c);
}

static void handle_storm(conn_t *c, const char *p, size_t n, int64_t now) {
    if (c->state != ST_CONNECT_SENT) return;
    if (o_proto == PROTO_CENTRIFUGO && reply_id(p, p + n) != 1) return;
    if (memmem(p, n, "\"error\"", 7)) {
        total_errors++;
        if (total_errors <= 3) fprintf(stderr, "loadgen: connect refused: %.*s\n", (int)n, p);
        conn_close(c, 1);
        return;
    }
    storm_success(c, now);
}

static void handle_line(conn_t *c, const char *p, const char *end, int64_t now) {
    /* every occurrence of "lg_ts" is one delivered message */
    int seen = count_ts(c, p, end, now);
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
        char sub[400], chan[256];
        int k = snprintf(sub, sizeof sub, "{\"id\":2,\"subscribe\":{\"channel\":\"%s\"}}",
                         chan_of(c, chan, sizeof chan));
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
    if (o_storm) {
        handle_storm(c, p, n, now);
        return;
    }
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
            if (c->state == ST_CLOSING) { /* storm: the server's answer; it closes next */
                buf_consume(&c->in, h + len);
                continue;
            }
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
    char req[2048], key[25];
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 21; i++) key[i] = b64[xorshift() & 63];
    key[21] = b64[xorshift() & 0x30]; /* 16 random bytes -> 22 chars + "==" */
    key[22] = '=';
    key[23] = '=';
    key[24] = 0;
    char path[1024];
    if (o_proto == PROTO_SOCKJS) /* <prefix>/<server id>/<session id>/websocket */
        snprintf(path, sizeof path, "%s/%03d/lg%08x%06d/websocket", o_path, c->idx % 1000,
                 xorshift(), c->idx);
    else if (o_rooms && o_proto == PROTO_PLAIN) /* the peer's room in the query */
        snprintf(path, sizeof path, "%s%croom=%d", o_path, strchr(o_path, '?') ? '&' : '?',
                 c->room);
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
        if (n_failed + storm_failed < 3)
            fprintf(stderr, "loadgen: handshake refused: %.*s\n",
                    (int)(c->in.len < 200 ? c->in.len : 200), b);
        conn_close(c, 1);
        return;
    }
    buf_consume(&c->in, (size_t)(e + 4 - b));
    if (o_proto == PROTO_CENTRIFUGO) {
        char cmd[4096];
        int k = o_token ? snprintf(cmd, sizeof cmd, "{\"id\":1,\"connect\":{\"token\":\"%s\"}}",
                                   o_token)
                        : snprintf(cmd, sizeof cmd, "{\"id\":1,\"connect\":{}}");
        c->state = ST_CONNECT_SENT;
        send_text(c, cmd, (size_t)k);
    } else if (o_storm) { /* plain: the credentials are the first message */
        char cmd[4096];
        int k = snprintf(cmd, sizeof cmd, "{\"token\":\"%s\"}", o_token ? o_token : "");
        c->state = ST_CONNECT_SENT;
        send_text(c, cmd, (size_t)k);
    } else if (o_proto == PROTO_SOCKETIO || o_proto == PROTO_SOCKJS) {
        c->state = ST_CONNECT_SENT; /* wait for the open packet / frame */
    } else {
        on_ready(c);
    }
    if (c->state != ST_CLOSED && c->in.len) parse_frames(c, now);
}

/* ---- HTTP streaming readers (sse, xhr_streaming) and the xhr_send pool ---- */

static void url_encode(const char *s, char *out, size_t size) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = 0;
}

/* The streaming request: GET (sse) or POST .../xhr_streaming, sent when TCP is up. */
static void start_stream(conn_t *c) {
    char req[8192];
    int n;
    if (o_transport == TR_SSE) {
        char query[6400] = "";
        if (o_proto == PROTO_CENTRIFUGO && o_token) {
            char connect[2048], enc[6200];
            snprintf(connect, sizeof connect, "{\"token\":\"%s\"}", o_token);
            url_encode(connect, enc, sizeof enc);
            snprintf(query, sizeof query, "%ccf_connect=%s", strchr(o_path, '?') ? '&' : '?',
                     enc);
        }
        n = snprintf(req, sizeof req,
                     "GET %s%s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n\r\n",
                     o_path, query, o_host, o_port);
    } else {
        n = snprintf(req, sizeof req,
                     "POST %s/xhr_streaming HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: 0\r\n\r\n",
                     c->sess, o_host, o_port);
    }
    if (c->state == ST_CONNECTING) c->state = ST_HANDSHAKE;
    c->hphase = H_HEAD;
    buf_append(&c->out, req, (size_t)n);
    flush_out(c);
}

static void send_enqueue(conn_t *c, int kind, int front) {
    if (sq_len == sq_cap) {
        size_t cap = sq_cap ? sq_cap * 2 : 1024;
        sendreq_t *q = malloc(cap * sizeof *q);
        if (!q) die("malloc");
        for (size_t i = 0; i < sq_len; i++) q[i] = sq[(sq_head + i) % sq_cap];
        free(sq);
        sq = q;
        sq_cap = cap;
        sq_head = 0;
    }
    if (front) {
        sq_head = (sq_head + sq_cap - 1) % sq_cap;
        sq[sq_head] = (sendreq_t){c, kind};
    } else {
        sq[(sq_head + sq_len) % sq_cap] = (sendreq_t){c, kind};
    }
    sq_len++;
    pump_senders();
}

/* POST <session>/xhr_send with one Centrifugo command (a JSON string in a JSON array). */
static void sender_request(conn_t *s, conn_t *c, int kind) {
    char body[4096], req[8192], chan[256];
    int bl;
    if (kind == SEND_CONNECT && o_token)
        bl = snprintf(body, sizeof body,
                      "[\"{\\\"id\\\":1,\\\"connect\\\":{\\\"token\\\":\\\"%s\\\"}}\"]", o_token);
    else if (kind == SEND_CONNECT)
        bl = snprintf(body, sizeof body, "[\"{\\\"id\\\":1,\\\"connect\\\":{}}\"]");
    else if (kind == SEND_SUBSCRIBE)
        bl = snprintf(body, sizeof body,
                      "[\"{\\\"id\\\":2,\\\"subscribe\\\":{\\\"channel\\\":\\\"%s\\\"}}\"]",
                      chan_of(c, chan, sizeof chan));
    else
        bl = snprintf(body, sizeof body, "[\"{}\"]");
    int n = snprintf(req, sizeof req,
                     "POST %s/xhr_send HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: %d\r\n\r\n%s",
                     c->sess, o_host, o_port, bl, body);
    s->busy = 1;
    s->for_client = c;
    s->req_kind = kind;
    xhr_sent++;
    buf_append(&s->out, req, (size_t)n);
    flush_out(s);
}

static void pump_senders(void) {
    for (int i = 0; i < o_send_conns && sq_len; i++) {
        conn_t *s = &senders[i];
        if (s->state != ST_READY || !s->tcp_up || s->busy || s->reopen) continue;
        while (sq_len) {
            sendreq_t r = sq[sq_head];
            sq_head = (sq_head + 1) % sq_cap;
            sq_len--;
            if (r.c->state == ST_CLOSED) continue; /* the client is gone: nothing to send */
            sender_request(s, r.c, r.kind);
            break;
        }
    }
}

/* Decode body bytes from c->in into c->msg; returns 1 when the response has ended. */
static int http_body(conn_t *c) {
    for (;;) {
        const char *b = c->in.data + c->in.start;
        size_t avail = c->in.len;
        if (c->bmode == B_EOF) {
            if (avail) buf_append(&c->msg, b, avail);
            buf_consume(&c->in, avail);
            return 0;
        }
        if (c->bmode == B_LENGTH) {
            size_t n = avail < (size_t)c->left ? avail : (size_t)c->left;
            if (n) buf_append(&c->msg, b, n);
            buf_consume(&c->in, n);
            c->left -= (int64_t)n;
            return c->left == 0;
        }
        if (c->cstate == CH_DATA) {
            if (!avail) return 0;
            size_t n = avail < (size_t)c->left ? avail : (size_t)c->left;
            buf_append(&c->msg, b, n);
            buf_consume(&c->in, n);
            c->left -= (int64_t)n;
            if (c->left == 0) c->cstate = CH_CRLF;
        } else if (c->cstate == CH_CRLF) {
            if (avail < 2) return 0;
            buf_consume(&c->in, 2);
            c->cstate = CH_SIZE;
        } else {
            const char *e = avail ? memmem(b, avail, "\r\n", 2) : NULL;
            if (!e) return 0;
            size_t l = (size_t)(e - b);
            if (c->cstate == CH_TRAILER) { /* trailer lines until an empty one */
                buf_consume(&c->in, l + 2);
                if (l == 0) {
                    c->cstate = CH_SIZE;
                    return 1;
                }
                continue;
            }
            long long size = strtoll(b, NULL, 16);
            buf_consume(&c->in, l + 2);
            if (size == 0) {
                c->cstate = CH_TRAILER;
            } else {
                c->left = size;
                c->cstate = CH_DATA;
            }
        }
    }
}

static void stream_line(conn_t *c, const char *p, size_t n, int64_t now) {
    if (o_transport == TR_SSE) {
        if (n < 5 || memcmp(p, "data:", 5) != 0) return; /* comments, id:, event:, blank */
        int seen = count_ts(c, p + 5, p + n, now);
        if (!seen && c->state == ST_HANDSHAKE && o_proto == PROTO_CENTRIFUGO) {
            if (memmem(p, n, "\"connect\"", 9)) {
                on_ready(c);
            } else if (memmem(p, n, "\"disconnect\"", 12)) {
                if (n_failed < 3) fprintf(stderr, "loadgen: sse refused: %.*s\n", (int)n, p);
                conn_close(c, 1);
            }
        }
        return;
    }
    /* SockJS xhr_streaming frames */
    if (n == 0) return;
    if (p[0] == 'h') return; /* heartbeat, or the 2048-byte prelude */
    if (p[0] == 'o') {
        if (c->state != ST_HANDSHAKE) return;
        if (o_proto == PROTO_CENTRIFUGO) {
            c->state = ST_CONNECT_SENT;
            send_enqueue(c, SEND_CONNECT, 0);
        } else {
            on_ready(c);
        }
    } else if (p[0] == 'c') {
        if (n_failed + n_closed_after_ready < 3)
            fprintf(stderr, "loadgen: sockjs close: %.*s\n", (int)n, p);
        conn_close(c, 0);
    } else if (p[0] == 'a') {
        count_ts(c, p, p + n, now);
        if (o_proto != PROTO_CENTRIFUGO) return;
        /* the Centrifugo messages are JSON strings: {\"id\":1,...} */
        if (memmem(p, n, "\"{}\"", 4)) send_enqueue(c, SEND_PONG, 0); /* ping -> pong */
        int connect = c->state == ST_CONNECT_SENT && memmem(p, n, "{\\\"id\\\":1,", 10);
        int subscribe = c->state == ST_SUBSCRIBE_SENT && memmem(p, n, "{\\\"id\\\":2,", 10);
        if ((connect || subscribe) && memmem(p, n, "\\\"error\\\"", 9)) {
            total_errors++;
            if (total_errors <= 3) fprintf(stderr, "loadgen: error reply: %.*s\n", (int)n, p);
            conn_close(c, 1);
        } else if (connect) {
            c->state = ST_SUBSCRIBE_SENT;
            send_enqueue(c, SEND_SUBSCRIBE, 0);
        } else if (subscribe) {
            on_ready(c);
        }
    }
}

/* Handle the complete lines of the decoded body; returns -1 if c was closed. */
static int stream_lines(conn_t *c, int64_t now) {
    buf_t *m = &c->msg;
    while (m->len) {
        const char *p = m->data + m->start;
        const char *nl = memchr(p, '\n', m->len);
        if (!nl) break; /* a partial line: wait for the rest */
        size_t n = (size_t)(nl - p);
        stream_line(c, p, n && p[n - 1] == '\r' ? n - 1 : n, now);
        if (c->state == ST_CLOSED) return -1;
        buf_consume(m, n + 1);
    }
    return 0;
}

/* The status line and headers of a response have arrived. Returns -1 if c was closed. */
static int http_head(conn_t *c) {
    if (c->kind != K_CLIENT) return 0; /* senders: judged when the response ends */
    if (c->status != 200) {
        if (n_failed < 3) fprintf(stderr, "loadgen: stream refused: HTTP %d\n", c->status);
        conn_close(c, 1);
        return -1;
    }
    if (o_transport == TR_SSE && o_proto != PROTO_CENTRIFUGO && c->state == ST_HANDSHAKE)
        on_ready(c); /* a plain SSE peer: subscribed once it answers */
    return 0;
}

/* A response has ended. Returns -1 if c was closed or is being reconnected. */
static int http_end(conn_t *c) {
    if (c->kind == K_SENDER) {
        conn_t *client = c->for_client;
        c->busy = 0;
        c->for_client = NULL;
        if (c->status / 100 != 2) {
            xhr_errors++;
            if (xhr_errors <= 3) fprintf(stderr, "loadgen: xhr_send: HTTP %d\n", c->status);
            if (client && client->state != ST_READY) conn_close(client, 1);
        }
        if (c->close_after) {
            reopen_later(c);
            return -1;
        }
        pump_senders();
        return 0;
    }
    if (o_transport == TR_XHR) { /* response_limit reached: poll on with a new response */
        stream_reopens++;
        if (c->close_after) {
            reopen_later(c);
            return -1;
        }
        start_stream(c);
        return c->state == ST_CLOSED ? -1 : 0;
    }
    conn_close(c, 0); /* an SSE stream that ends is a closed client */
    return -1;
}

/* Read responses in c->in (a streaming client or an xhr_send sender). Returns -1 if c was
 * closed or is being reconnected. */
static int http_read(conn_t *c, int64_t now) {
    for (;;) {
        if (c->hphase == H_HEAD) {
            const char *b = c->in.data + c->in.start;
            const char *e = c->in.len ? memmem(b, c->in.len, "\r\n\r\n", 4) : NULL;
            if (!e) return 0;
            size_t hl = (size_t)(e + 4 - b);
            c->status = c->in.len >= 12 ? atoi(b + 9) : 0;
            const char *cl = find_ci(b, hl, "\r\ncontent-length:");
            const char *te = find_ci(b, hl, "\r\ntransfer-encoding:");
            const char *co = find_ci(b, hl, "\r\nconnection:");
            int chunked = 0;
            if (te) {
                const char *eol = memmem(te + 2, (size_t)(e + 2 - te - 2), "\r\n", 2);
                chunked = eol && find_ci(te, (size_t)(eol - te), "chunked") != NULL;
            }
            c->close_after = memcmp(b, "HTTP/1.0", 8) == 0;
            if (co) {
                const char *eol = memmem(co + 2, (size_t)(e + 2 - co - 2), "\r\n", 2);
                if (eol && find_ci(co, (size_t)(eol - co), "close")) c->close_after = 1;
            }
            if (c->status == 204 || c->status == 304 || c->status / 100 == 1) {
                c->bmode = B_LENGTH;
                c->left = 0;
            } else if (chunked) {
                c->bmode = B_CHUNKED;
                c->cstate = CH_SIZE;
            } else if (cl) {
                c->bmode = B_LENGTH;
                c->left = strtoll(cl + 17, NULL, 10);
            } else {
                c->bmode = B_EOF;
                c->close_after = 1;
            }
            buf_consume(&c->in, hl);
            buf_clear(&c->msg);
            c->hphase = H_BODY;
            if (http_head(c) < 0) return -1;
        }
        int done = http_body(c);
        if (c->kind == K_CLIENT && stream_lines(c, now) < 0) return -1;
        if (!done) return 0;
        c->hphase = H_HEAD;
        if (http_end(c) < 0) return -1;
    }
}

/* The server closed c's TCP connection. */
static void http_eof(conn_t *c, int64_t now) {
    if (c->kind == K_SENDER) {
        if (c->busy && c->for_client) send_enqueue(c->for_client, c->req_kind, 1);
        c->busy = 0;
        c->for_client = NULL;
        reopen_later(c); /* a keep-alive connection the server let go */
        return;
    }
    if (c->hphase == H_BODY && c->bmode == B_EOF) {
        stream_lines(c, now);
        if (c->state == ST_CLOSED) return;
        c->hphase = H_HEAD;
        if (http_end(c) < 0) return;
    }
    if (o_transport == TR_XHR && c->hphase == H_HEAD && c->state != ST_CLOSED) {
        stream_reopens++;
        reopen_later(c); /* between two responses: poll on over a new connection */
        return;
    }
    conn_close(c, c->state != ST_READY);
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

/* ---- the event loop ---- */

static void start_conn(conn_t *c) {
    n_started++;
    n_pending++;
    if (conn_open(c) < 0) {
        c->state = ST_CLOSED;
        n_failed++;
        n_pending--;
        return;
    }
    c->state = ST_CONNECTING;
}

static void on_tcp_up(conn_t *c) {
    c->tcp_up = 1;
    if (c->kind == K_API) {
        c->state = ST_READY;
        set_events(c);
    } else if (c->kind == K_SENDER) {
        c->state = ST_READY;
        set_events(c);
        pump_senders();
    } else if (o_transport == TR_WEBSOCKET) {
        start_ws(c);
    } else {
        start_stream(c);
    }
}

static void on_event(conn_t *c, uint32_t events, int64_t now) {
    if (c->state == ST_CLOSED || c->reopen || c->fd < 0) return;
    if (!c->tcp_up && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            if (n_failed + storm_failed < 3) fprintf(stderr, "loadgen: connect: %s\n", strerror(err));
            conn_close(c, 1);
            return;
        }
        on_tcp_up(c);
        if (c->state == ST_CLOSED || c->reopen) return;
    }
    if (events & EPOLLOUT) {
        flush_out(c);
        if (c->state == ST_CLOSED) return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        int http = c->kind == K_SENDER || (c->kind == K_CLIENT && o_transport != TR_WEBSOCKET);
        for (;;) {
            buf_reserve(&c->in, 65536);
            size_t room = c->in.cap - c->in.start - c->in.len;
            ssize_t n = read(c->fd, c->in.data + c->in.start + c->in.len, room);
            if (n > 0) {
                c->in.len += (size_t)n;
                if (c->kind == K_API) {
                    api_read(c);
                } else if (http) {
                    if (http_read(c, now) < 0) return;
                } else if (c->state == ST_HANDSHAKE) {
                    handle_handshake(c, now);
                } else if (parse_frames(c, now) < 0) {
                    return;
                }
                if (c->state == ST_CLOSED || c->reopen) return;
                if ((size_t)n < room) break; /* drained for now; epoll is level-triggered */
            } else if (n == 0) {
                if (http)
                    http_eof(c, now);
                else
                    conn_close(c, c->state != ST_READY);
                return;
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            } else if (errno == EINTR) {
                continue;
            } else if (c->kind == K_SENDER) {
                http_eof(c, now);
                return;
            } else {
                conn_close(c, 1);
                return;
            }
        }
    }
}

/* Reconnect what asked for it during the last batch of events. */
static void do_reopens(void) {
    for (int i = 0; i < n_reopen; i++) {
        conn_t *c = reopen_list[i];
        c->reopen = 0;
        if (c->state == ST_CLOSED) continue;
        if (conn_open(c) < 0) {
            if (c->kind == K_SENDER) {
                fprintf(stderr, "loadgen: xhr_send connection: %s\n", strerror(errno));
                c->state = ST_CLOSED;
            } else {
                conn_close(c, 1);
            }
        } else if (c->kind == K_SENDER) {
            c->state = ST_CONNECTING;
        }
    }
    n_reopen = 0;
}

static void poll_once(int timeout_ms) {
    struct epoll_event evs[1024];
    int n = epoll_wait(ep, evs, 1024, timeout_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    int64_t now = now_ns();
    for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events, now);
    if (n_reopen) do_reopens();
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen [--host H] [--port P] [--path /connection/websocket] [--clients N]\n"
            "  [--proto centrifugo|plain|socketio|sockjs] [--transport websocket|sse|xhr_streaming]\n"
            "  [--channel C] [--rooms R] [--rate R] [--duration S] [--warmup S]\n"
            "  [--count K] [--api-rate R | --api-count K] [--api-path P] [--api-key K]\n"
            "  [--api-conns N] [--connect-timeout S] [--drain-timeout S] [--max-pending N]\n"
            "  [--payload BYTES] [--server-pid PID] [--src 127.0.0.2,127.0.0.3]\n"
            "  [--token JWT] [--storm [--storm-inflight N]] [--send-conns N]\n");
    exit(2);
}

/* CPU and per-CPU busy time at the start and end of the measured window */
static double cpu0, cpu1, scpu0, scpu1;
static double busy0[MAX_CPUS], busy1[MAX_CPUS];
static int ncpu;
static int64_t w0, w1;

static void window_start(int64_t now) {
    measuring = 1;
    w0 = now;
    cpu0 = cpu_self();
    scpu0 = cpu_pid(o_server_pid);
    ncpu = cpu_busy(busy0);
}

static void window_end(void) {
    w1 = now_ns();
    cpu1 = cpu_self();
    scpu1 = cpu_pid(o_server_pid);
    cpu_busy(busy1);
}

static void print_cpu_tail(double window) {
    printf("\"gen_cpu\":%.3f,\"server_cpu\":%.3f,", window > 0 ? (cpu1 - cpu0) / window : 0.0,
           (o_server_pid > 0 && window > 0) ? (scpu1 - scpu0) / window : -1.0);
    /* how busy each CPU was over the window, all processes: shows interference */
    printf("\"cpu_busy\":[");
    for (int i = 0; i < ncpu; i++)
        printf("%s%.3f", i ? "," : "", window > 0 ? (busy1[i] - busy0[i]) / window : 0.0);
    printf("]}\n");
    fflush(stdout);
}

/* Storm slot: start the next connection. */
static int storm_seq;
static void storm_start(conn_t *c) {
    c->idx = storm_seq++;
    c->t_start = now_ns();
    c->reopen = 0;
    if (conn_open(c) < 0) {
        c->state = ST_CLOSED;
        storm_failed++;
        if (measuring) storm_failed_window++;
        if (storm_failed <= 3) fprintf(stderr, "loadgen: socket: %s\n", strerror(errno));
        return;
    }
    c->state = ST_CONNECTING;
}

#define STORM_CONNECT_TIMEOUT_NS 5000000000LL /* a connect not answered by then failed */
#define STORM_CLOSE_TIMEOUT_NS 2000000000LL   /* a server that does not close: we do */

static int run_storm(void) {
    int n = o_storm_inflight;
    conns = calloc((size_t)n, sizeof *conns);
    for (int i = 0; i < n; i++) {
        conns[i].fd = -1;
        conns[i].state = ST_CLOSED;
    }
    int64_t start = now_ns();
    int64_t wstart = start + (int64_t)(o_warmup * 1e9);
    int64_t end = wstart + (int64_t)(o_duration * 1e9);
    for (;;) {
        int64_t now = now_ns();
        if (!measuring && now >= wstart) window_start(now);
        if (now >= end) break;
        for (int i = 0; i < n; i++) {
            conn_t *c = &conns[i];
            if (c->state == ST_CLOSING && now - c->t_start > STORM_CLOSE_TIMEOUT_NS)
                conn_close(c, 0);
            else if (c->state != ST_CLOSED && c->state != ST_CLOSING &&
                     now - c->t_start > STORM_CONNECT_TIMEOUT_NS)
                conn_close(c, 1);
            if (c->state == ST_CLOSED) storm_start(c);
        }
        poll_once(1);
    }
    window_end();
    measuring = 0;
    for (int i = 0; i < n; i++) fd_close(&conns[i]); /* unfinished ones are not counted */
    double window = (w1 - w0) / 1e9;
    printf("{\"mode\":\"storm\",\"inflight\":%d,\"window_s\":%.3f,\"connects\":%llu,"
           "\"connects_in_window\":%llu,\"connects_per_s\":%.1f,\"failed\":%llu,"
           "\"failed_in_window\":%llu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"samples\":%llu,\"errors\":%llu,",
           n, window, (unsigned long long)storm_ok, (unsigned long long)storm_ok_window,
           window > 0 ? storm_ok_window / window : 0.0, (unsigned long long)storm_failed,
           (unsigned long long)storm_failed_window, hist_pct(0.50), hist_pct(0.99),
           lat_max_ns / 1e6, (unsigned long long)hist_n, (unsigned long long)total_errors);
    print_cpu_tail(window);
    return 0;
}

static void open_pool(conn_t **pool, int n, int kind) {
    *pool = calloc((size_t)n, sizeof **pool);
    for (int i = 0; i < n; i++) {
        conn_t *a = &(*pool)[i];
        a->idx = i;
        a->kind = kind;
        if (conn_open(a) < 0) die("connect");
        a->state = ST_CONNECTING;
    }
}

/* Expected deliveries of one publication by client c (to all, or to its room). */
static uint64_t audience(const conn_t *c) {
    return o_rooms ? (uint64_t)room_ready[c->room] : (uint64_t)n_ready;
}

int main(int argc, char **argv) {
    static struct option opts[] = {
        {"host", 1, 0, 'h'},           {"port", 1, 0, 'p'},
        {"path", 1, 0, 'P'},           {"clients", 1, 0, 'n'},
        {"proto", 1, 0, 'x'},          {"channel", 1, 0, 'c'},
        {"rate", 1, 0, 'r'},           {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'w'},         {"count", 1, 0, 'k'},
        {"api-rate", 1, 0, 'a'},       {"api-count", 1, 0, 'A'},
        {"api-path", 1, 0, 'u'},       {"api-key", 1, 0, 'K'},
        {"api-conns", 1, 0, 'C'},      {"connect-timeout", 1, 0, 't'},
        {"drain-timeout", 1, 0, 'D'},  {"max-pending", 1, 0, 'm'},
        {"payload", 1, 0, 'l'},        {"server-pid", 1, 0, 's'},
        {"src", 1, 0, 'S'},            {"transport", 1, 0, 'T'},
        {"rooms", 1, 0, 'R'},          {"storm", 0, 0, 'z'},
        {"storm-inflight", 1, 0, 'i'}, {"token", 1, 0, 'j'},
        {"send-conns", 1, 0, 'q'},     {0, 0, 0, 0},
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
        case 'T':
            if (strcmp(optarg, "websocket") == 0) o_transport = TR_WEBSOCKET;
            else if (strcmp(optarg, "sse") == 0) o_transport = TR_SSE;
            else if (strcmp(optarg, "xhr_streaming") == 0) o_transport = TR_XHR;
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
        case 'R': o_rooms = atoi(optarg); break;
        case 'z': o_storm = 1; break;
        case 'i': o_storm_inflight = atoi(optarg); break;
        case 'j': o_token = optarg; break;
        case 'q': o_send_conns = atoi(optarg); break;
        default: usage();
        }
    }
    if (o_clients < 1 || o_payload < 0 || o_payload >= (int)sizeof padding) usage();
    if (o_token && strlen(o_token) > 1900) usage();
    int fanout = o_api_rate > 0 || o_api_count >= 0;
    int stream = o_transport != TR_WEBSOCKET;
    /* what each mode supports */
    if (o_rooms < 0 || (o_rooms && (stream || fanout || (o_proto != PROTO_CENTRIFUGO &&
                                                          o_proto != PROTO_PLAIN))))
        usage();
    if (o_storm && (stream || o_storm_inflight < 1 ||
                    (o_proto != PROTO_CENTRIFUGO && o_proto != PROTO_PLAIN)))
        usage();
    if (stream && (o_count >= 0 || (!fanout && o_rate > 0))) {
        fprintf(stderr, "loadgen: sse and xhr_streaming clients only read: use --api-rate, "
                        "--api-count or --rate 0\n");
        exit(2);
    }
    if ((o_transport == TR_SSE && o_proto != PROTO_CENTRIFUGO && o_proto != PROTO_PLAIN) ||
        (o_transport == TR_XHR && o_proto != PROTO_CENTRIFUGO && o_proto != PROTO_SOCKJS))
        usage();
    memset(padding, 'x', (size_t)o_payload);
    padding[o_payload] = 0;
    rng ^= (uint32_t)getpid();

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    if (o_storm) return run_storm();
    conns = calloc((size_t)o_clients, sizeof *conns);
    if (o_rooms) room_ready = calloc((size_t)o_rooms, sizeof *room_ready);
    for (int i = 0; i < o_clients; i++) {
        conn_t *c = &conns[i];
        c->idx = i;
        c->fd = -1;
        c->state = -1;
        c->next_id = 3;
        c->room = o_rooms ? i % o_rooms : 0;
        if (o_transport == TR_XHR) { /* <prefix>/<server id>/<session id> */
            char sess[1024];
            snprintf(sess, sizeof sess, "%s/%03d/lg%08x%06d", o_path, i % 1000, xorshift(), i);
            c->sess = strdup(sess);
        }
    }
    if (o_transport == TR_XHR && o_proto == PROTO_CENTRIFUGO) {
        if (o_send_conns < 1) usage();
        open_pool(&senders, o_send_conns, K_SENDER);
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
        open_pool(&apis, o_api_conns, K_API);
        int64_t d = now_ns() + 5000000000LL;
        for (;;) {
            int up = 0;
            for (int i = 0; i < o_api_conns; i++) up += apis[i].state == ST_READY;
            if (up == o_api_conns || now_ns() > d) break;
            poll_once(10);
        }
    }

    /* ---- load phase ---- */
    uint64_t expected = 0;
    int deterministic = o_count >= 0 || o_api_count >= 0;
    int64_t start = now_ns();
    if (deterministic) {
        /* every ready client publishes K messages (or K API publications), then drain */
        window_start(start);
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
                    if (conns[i].state == ST_READY) {
                        publish(&conns[i]);
                        expected += audience(&conns[i]);
                    }
        }
    } else {
        int64_t end = start + (int64_t)((o_warmup + o_duration) * 1e9);
        int64_t wstart = start + (int64_t)(o_warmup * 1e9);
        double total_rate = fanout ? o_api_rate : o_rate * o_clients;
        uint64_t due_sent = 0;
        int rr = 0;
        for (;;) {
            int64_t now = now_ns();
            if (!measuring && now >= wstart) window_start(now);
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
                    expected += audience(c);
                }
            }
            poll_once(1);
        }
    }
    window_end();
    uint64_t in_window = window_recv;
    if (!deterministic) measuring = 0;

    /* ---- drain: read everything still in flight ---- */
    int64_t dd = now_ns() + (int64_t)(o_drain_timeout * 1e9);
    while (total_recv < expected && now_ns() < dd && n_ready > 0) poll_once(5);
    if (deterministic) {
        window_end();
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
    static const char *transports[] = {"websocket", "sse", "xhr_streaming"};
    printf("{\"clients\":%d,\"transport\":\"%s\",\"rooms\":%d,\"connected\":%d,"
           "\"ready_at_end\":%d,\"failed\":%d,"
           "\"closed\":%d,\"connect_s\":%.3f,\"window_s\":%.3f,\"sent\":%llu,"
           "\"api_sent\":%llu,\"api_ok\":%llu,\"api_errors\":%llu,"
           "\"received\":%llu,\"expected\":%llu,\"missing\":%lld,\"received_in_window\":%llu,"
           "\"delivered_per_s\":%.1f,\"sent_per_s\":%.1f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"samples\":%llu,"
           "\"min_per_client\":%llu,\"max_per_client\":%llu,\"errors\":%llu,"
           "\"send_backlogged\":%llu,\"stream_reopens\":%llu,\"xhr_sent\":%llu,"
           "\"xhr_errors\":%llu,",
           o_clients, transports[o_transport], o_rooms, connected, n_ready, n_failed,
           n_closed_after_ready, connect_s, window, (unsigned long long)total_sent,
           (unsigned long long)api_sent, (unsigned long long)api_ok,
           (unsigned long long)api_err, (unsigned long long)total_recv,
           (unsigned long long)expected, (long long)expected - (long long)total_recv,
           (unsigned long long)in_window, window > 0 ? in_window / window : 0.0,
           window > 0 ? (fanout ? api_sent : total_sent) / (window + o_warmup) : 0.0,
           hist_pct(0.50), hist_pct(0.99), lat_max_ns / 1e6, (unsigned long long)hist_n,
           (unsigned long long)min_recv, (unsigned long long)max_recv,
           (unsigned long long)total_errors, (unsigned long long)send_backlogged,
           (unsigned long long)stream_reopens, (unsigned long long)xhr_sent,
           (unsigned long long)xhr_errors);
    print_cpu_tail(window);
    return 0;
}

/* The benchmark's WebSocket load: N connections, each sending one masked binary message of SIZE
 * bytes and waiting for its echo, again and again, for SECONDS. One thread, epoll: a Python
 * client would itself be the bottleneck at tens of thousands of echoes per second.
 *
 *   wsclient HOST PORT PATH CONNECTIONS SECONDS SIZE ["Header: value" ...]
 *
 * Prints one JSON line: echoes, seconds, echoes_per_s, p50_us, p99_us, mb_per_s (payload bytes
 * echoed per second, one direction), errors. Built by bench/proxy.py with `cc -O2`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_US 1000000 /* latency histogram: 1 us buckets up to 1 s */

typedef struct {
    int fd;
    size_t sent;       /* bytes of the current frame written */
    size_t received;   /* bytes of the current echo read (header included) */
    size_t expected;   /* full size of the echo frame, once its header is known */
    uint64_t started;  /* when the current message was sent (ns) */
    int want_write;
    unsigned char hdr[10]; /* the echo frame's header, as it arrives */
    size_t hdr_have;
} conn_t;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static unsigned char *frame;
static size_t frame_len, payload_len, header_len;
static uint32_t *histogram;
static uint64_t echoes, errors;

static int open_ws(const char *host, int port, const char *path, int nheaders, char **headers) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &addr.sin_addr);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); exit(2); }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char request[8192];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n", path, host, port);
    for (int i = 0; i < nheaders; i++)
        n += snprintf(request + n, sizeof request - (size_t)n, "%s\r\n", headers[i]);
    n += snprintf(request + n, sizeof request - (size_t)n, "\r\n");
    if (write(fd, request, (size_t)n) != n) { perror("write"); exit(2); }
    char response[8192];
    size_t got = 0;
    while (got < sizeof response - 1) {
        ssize_t r = read(fd, response + got, 1); /* byte by byte: no frame bytes swallowed */
        if (r <= 0) { fprintf(stderr, "handshake: connection closed\n"); exit(2); }
        got += (size_t)r;
        if (got >= 4 && memcmp(response + got - 4, "\r\n\r\n", 4) == 0) break;
    }
    response[got] = 0;
    if (strncmp(response, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "handshake refused: %.200s\n", response);
        exit(2);
    }
    return fd;
}

static void build_frame(size_t size) {
    payload_len = size;
    header_len = size < 126 ? 2 : size < 65536 ? 4 : 10;
    frame_len = header_len + 4 + size;
    frame = malloc(frame_len);
    frame[0] = 0x82; /* FIN, binary */
    if (size < 126) {
        frame[1] = 0x80 | (unsigned char)size;
    } else if (size < 65536) {
        frame[1] = 0x80 | 126; frame[2] = (unsigned char)(size >> 8); frame[3] = (unsigned char)size;
    } else {
        frame[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) frame[2 + i] = (unsigned char)((uint64_t)size >> (56 - 8 * i));
    }
    unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(frame + header_len, mask, 4);
    for (size_t i = 0; i < size; i++) frame[header_len + 4 + i] = (unsigned char)('a' + i % 26) ^ mask[i & 3];
}

static void start_send(conn_t *c) {
    c->sent = 0;
    c->received = 0;
    c->expected = 0;
    c->hdr_have = 0;
    c->started = now_ns();
}

/* Write what the socket takes; return 1 when the whole frame is out. */
static int pump_write(conn_t *c) {
    while (c->sent < frame_len) {
        ssize_t w = write(c->fd, frame + c->sent, frame_len - c->sent);
        if (w < 0) {
            if (errno == EAGAIN) return 0;
            errors++;
            return -1;
        }
        c->sent += (size_t)w;
    }
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: wsclient HOST PORT PATH CONNECTIONS SECONDS SIZE [HEADER...]\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    const char *path = argv[3];
    int nconn = atoi(argv[4]);
    double seconds = atof(argv[5]);
    size_t size = (size_t)atoll(argv[6]);
    build_frame(size);
    histogram = calloc(MAX_US + 1, sizeof *histogram);
    conn_t *conns = calloc((size_t)nconn, sizeof *conns);
    int ep = epoll_create1(0);
    static unsigned char rbuf[1 << 20];
    for (int i = 0; i < nconn; i++) {
        conns[i].fd = open_ws(host, port, path, argc - 7, argv + 7);
        fcntl(conns[i].fd, F_SETFL, fcntl(conns[i].fd, F_GETFL) | O_NONBLOCK);
    }
    uint64_t begin = now_ns();
    uint64_t end = begin + (uint64_t)(seconds * 1e9);
    uint64_t bytes = 0;
    for (int i = 0; i < nconn; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
        start_send(&conns[i]);
        int done = pump_write(&conns[i]);
        if (done == 0) {
            conns[i].want_write = 1;
            ev.events = EPOLLIN | EPOLLOUT;
            epoll_ctl(ep, EPOLL_CTL_MOD, conns[i].fd, &ev);
        }
    }
    struct epoll_event events[256];
    int running = nconn;
    while (running > 0) {
        int n = epoll_wait(ep, events, 256, 100);
        uint64_t t = now_ns();
        for (int k = 0; k < n; k++) {
            conn_t *c = events[k].data.ptr;
            if (c->fd < 0) continue;
            if ((events[k].events & EPOLLOUT) && c->want_write) {
                int done = pump_write(c);
                if (done != 0) {
                    c->want_write = 0;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!(events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            for (;;) {
                ssize_t r = read(c->fd, rbuf, sizeof rbuf);
                if (r < 0 && errno == EAGAIN) break;
                if (r <= 0) { errors++; close(c->fd); c->fd = -1; running--; break; }
                size_t off = 0;
                while (off < (size_t)r) {
                    if (c->expected == 0) {
                        /* Server frames are unmasked: 2, 4 or 10 header bytes, which may
                         * arrive split. */
                        while (off < (size_t)r && c->hdr_have < 2) c->hdr[c->hdr_have++] = rbuf[off++];
                        if (c->hdr_have < 2) break;
                        size_t len = c->hdr[1] & 0x7f;
                        size_t hl = len == 126 ? 4 : len == 127 ? 10 : 2;
                        while (off < (size_t)r && c->hdr_have < hl) c->hdr[c->hdr_have++] = rbuf[off++];
                        if (c->hdr_have < hl) break;
                        if (hl == 4) len = ((size_t)c->hdr[2] << 8) | c->hdr[3];
                        else if (hl == 10) { len = 0; for (int i = 0; i < 8; i++) len = (len << 8) | c->hdr[2 + i]; }
                        c->expected = hl + len;
                        c->received = hl;
                        if (c->received < c->expected && off >= (size_t)r) break;
                    }
                    size_t take = (size_t)r - off;
                    if (take > c->expected - c->received) take = c->expected - c->received;
                    c->received += take;
                    off += take;
                    if (c->received == c->expected) {
                        uint64_t us = (t - c->started) / 1000;
                        histogram[us > MAX_US ? MAX_US : us]++;
                        echoes++;
                        bytes += payload_len;
                        if (t >= end) { close(c->fd); c->fd = -1; running--; break; }
                        start_send(c);
                        int done = pump_write(c);
                        if (done == 0) {
                            c->want_write = 1;
                            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                        }
                    }
                }
                if (c->fd < 0) break;
            }
        }
        if (now_ns() > end + 5000000000ull) break; /* a stuck connection: give up */
    }
    double elapsed = (double)(now_ns() - begin) / 1e9;
    uint64_t seen = 0, p50 = 0, p99 = 0;
    for (int us = 0; us <= MAX_US; us++) {
        seen += histogram[us];
        if (!p50 && seen * 2 >= echoes) p50 = (uint64_t)us;
        if (!p99 && seen * 100 >= echoes * 99) { p99 = (uint64_t)us; break; }
    }
    printf("{\"echoes\": %llu, \"seconds\": %.3f, \"echoes_per_s\": %.1f, \"p50_us\": %llu, "
           "\"p99_us\": %llu, \"mb_per_s\": %.1f, \"errors\": %llu}\n",
           (unsigned long long)echoes, elapsed, echoes / elapsed, (unsigned long long)p50,
           (unsigned long long)p99, bytes / elapsed / 1e6, (unsigned long long)errors);
    return 0;
}

/* UDP tracker load generator for bench/tracker_announce.py (BEP 15).
 *
 * Closed loop, like wrk: SOCKETS sockets, each with one announce in flight;
 * a reply (or a 1 s timeout, counted) releases the next.  Each socket first
 * connects (action 0) for a connection id and reconnects every 50 s or after
 * an error reply.  Info hashes come from the file HASHES (40 hex per line),
 * peer ids from a pool of 50 per process, numwant 50, left 0 one time in 4
 * (as bench/tracker_wrk.lua).  Several target ports may be given: sockets are
 * spread over them (several tracker processes).
 *
 *   udp_announce_load HOST DURATION_S SOCKETS HASHES PORT [PORT...]
 *
 * Prints one line: UDPJSON {"requests": n, "duration_us": n, "timeouts": n,
 * "errors": n, "p50_us": n, "p90_us": n, "p99_us": n, "max_us": n}
 * Written in C so that one core of load can outrun the tracker under test
 * (a Python generator could not keep opentracker busy).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXS 1024
#define MAXH 200000
#define HIST_US 1000000

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + ts.tv_nsec / 1000;
}

static void put32(uint8_t *p, uint32_t v) { v = htonl(v); memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)(v >> 32)); put32(p + 4, (uint32_t)v); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return ntohl(v); }
static uint64_t get64(const uint8_t *p) { return ((uint64_t)get32(p) << 32) | get32(p + 4); }

struct slot {
    int fd;
    uint64_t conn_id, conn_at, sent_at;
    uint32_t tid;
    int connected;
};

static uint8_t hashes[MAXH][20];
static int nhashes;
static uint8_t peers[50][20];
static uint32_t hist[HIST_US + 1];

static void send_req(struct slot *s, uint64_t t) {
    uint8_t buf[98];
    s->tid = (uint32_t)random();
    if (!s->connected || t - s->conn_at > 50000000u) {
        s->connected = 0;
        put64(buf, 0x41727101980ULL);
        put32(buf + 8, 0);
        put32(buf + 12, s->tid);
        send(s->fd, buf, 16, 0);
    } else {
        int peer = random() % 50;
        put64(buf, s->conn_id);
        put32(buf + 8, 1);
        put32(buf + 12, s->tid);
        memcpy(buf + 16, hashes[random() % nhashes], 20);
        memcpy(buf + 36, peers[peer], 20);
        put64(buf + 56, 0);                                   /* downloaded */
        put64(buf + 64, (random() % 4 == 0) ? 0 : 1000);      /* left */
        put64(buf + 72, 0);                                   /* uploaded */
        put32(buf + 80, 0);                                   /* event */
        put32(buf + 84, 0);                                   /* ip */
        put32(buf + 88, (uint32_t)peer);                      /* key */
        put32(buf + 92, 50);                                  /* num_want */
        buf[96] = (uint8_t)((6000 + peer) >> 8);
        buf[97] = (uint8_t)(6000 + peer);
        send(s->fd, buf, 98, 0);
    }
    s->sent_at = t;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST DURATION_S SOCKETS HASHES PORT [PORT...]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    double duration = atof(argv[2]);
    int nsock = atoi(argv[3]);
    if (nsock < 1 || nsock > MAXS) return 2;
    FILE *f = fopen(argv[4], "r");
    if (!f) { perror(argv[4]); return 2; }
    char line[128];
    while (nhashes < MAXH && fgets(line, sizeof line, f)) {
        if (strlen(line) < 40) continue;
        for (int i = 0; i < 20; i++) sscanf(line + 2 * i, "%2hhx", &hashes[nhashes][i]);
        nhashes++;
    }
    fclose(f);
    if (!nhashes) return 2;
    srandom((unsigned)(now_us() ^ getpid()));
    for (int p = 0; p < 50; p++) {
        memcpy(peers[p], "-UL0001-", 8);
        for (int i = 8; i < 20; i++) peers[p][i] = (uint8_t)random();
    }
    static struct slot slots[MAXS];
    static struct pollfd pfd[MAXS];
    int nports = argc - 5;
    for (int i = 0; i < nsock; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET};
        inet_pton(AF_INET, host, &a.sin_addr);
        a.sin_port = htons((uint16_t)atoi(argv[5 + i % nports]));
        slots[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (slots[i].fd < 0 || connect(slots[i].fd, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("socket");
            return 1;
        }
        pfd[i].fd = slots[i].fd;
        pfd[i].events = POLLIN;
    }
    uint64_t start = now_us(), end = start + (uint64_t)(duration * 1e6);
    uint64_t requests = 0, timeouts = 0, errors = 0, maxlat = 0;
    for (int i = 0; i < nsock; i++) send_req(&slots[i], start);
    uint8_t buf[65536];
    for (;;) {
        uint64_t t = now_us();
        if (t >= end) break;
        int n = poll(pfd, nsock, 50);
        if (n < 0 && errno != EINTR) { perror("poll"); return 1; }
        t = now_us();
        for (int i = 0; i < nsock; i++) {
            struct slot *s = &slots[i];
            if (pfd[i].revents & POLLIN) {
                ssize_t len;
                while ((len = recv(s->fd, buf, sizeof buf, 0)) >= 8) {
                    if (get32(buf + 4) != s->tid) continue;
                    uint32_t action = get32(buf);
                    if (action == 0 && len >= 16) {
                        s->conn_id = get64(buf + 8);
                        s->connected = 1;
                        s->conn_at = t;
                    } else if (action == 1 && len >= 20) {
                        uint64_t lat = t - s->sent_at;
                        hist[lat > HIST_US ? HIST_US : lat]++;
                        if (lat > maxlat) maxlat = lat;
                        requests++;
                    } else {
                        errors++;
                        s->connected = 0;
                    }
                    send_req(s, t);
                    break;
                }
            } else if (t - s->sent_at > 1000000u) {
                timeouts++;
                s->connected = 0;
                send_req(s, t);
            }
        }
    }
    uint64_t elapsed = now_us() - start;
    uint64_t pct[3] = {0, 0, 0}, seen = 0;
    double want[3] = {0.50, 0.90, 0.99};
    int k = 0;
    for (int us = 0; us <= HIST_US && k < 3; us++) {
        seen += hist[us];
        while (k < 3 && requests && seen >= want[k] * requests) pct[k++] = (uint64_t)us;
    }
    printf("UDPJSON {\"requests\": %llu, \"duration_us\": %llu, \"timeouts\": %llu, "
           "\"errors\": %llu, \"p50_us\": %llu, \"p90_us\": %llu, \"p99_us\": %llu, "
           "\"max_us\": %llu}\n",
           (unsigned long long)requests, (unsigned long long)elapsed,
           (unsigned long long)timeouts, (unsigned long long)errors,
           (unsigned long long)pct[0], (unsigned long long)pct[1], (unsigned long long)pct[2],
           (unsigned long long)maxlat);
    return 0;
}

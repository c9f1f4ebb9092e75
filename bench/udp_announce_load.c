/* UDP tracker load generator for bench/tracker_announce.py (BEP 15).
 *
 * Closed loop, like wrk: INFLIGHT simulated hosts ("slots"), each with one
 * request in flight; a reply (or a 1 s timeout, counted) releases the next.
 * Each slot first connects (action 0) for a connection id and reconnects
 * every 50 s or after an error reply.  Info hashes come from the file HASHES
 * (40 hex per line), peer ids from a pool of 50 per process, numwant 50,
 * left 0 one time in 4 (as bench/tracker_wrk.lua).  Several target ports may
 * be given: slots are spread over them (several tracker processes).
 *
 *   udp_announce_load HOST DURATION_S INFLIGHT HASHES PORT [PORT...]
 *
 * The slots share a few sockets (env UDP_LOAD_SOCKETS, default 16, at least
 * one per port): a reply is matched to its slot by its transaction id, whose
 * high 16 bits are the slot's index.  Each socket is read with recvmmsg and
 * written with sendmmsg, 64 datagrams per system call at most, so that one
 * core of load stays well ahead of a C tracker even with thousands of
 * requests in flight: the process prints its own CPU seconds ("cpu_s") so the
 * caller can show it was not the limit.  A late reply to a request that
 * already timed out no longer matches its slot and is counted as "stale".
 * The slots start 64 at a time, one group per millisecond, so the first
 * connects do not arrive at the tracker as one burst larger than its socket
 * buffer (Linux's default holds 256 such datagrams; the rest would be
 * dropped and each cost its slot a 1 s timeout).
 *
 * Prints one line: UDPJSON {"requests": n, "duration_us": n, "timeouts": n,
 * "errors": n, "stale": n, "sent": n, "connects": n, "inflight": n,
 * "sockets": n, "cpu_s": x, "peers_per_reply": x, "p50_us": n, "p90_us": n, "p99_us": n,
 * "max_us": n}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXSLOTS 65535
#define MAXSOCK 256
#define MAXH 200000
#define HIST_US 1000000
#define BATCH 64
#define REQ 98

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
    uint64_t conn_id, conn_at, sent_at;
    uint32_t tid;
    int connected;
};

/* One socket's outgoing batch, flushed with sendmmsg. */
struct outq {
    int fd, n;
    uint8_t buf[BATCH][REQ];
    struct iovec iov[BATCH];
    struct mmsghdr msg[BATCH];
};

static uint8_t hashes[MAXH][20];
static int nhashes;
static uint8_t peers[50][20];
static uint32_t hist[HIST_US + 1];
static struct slot slots[MAXSLOTS];
static struct outq outs[MAXSOCK];
static int nsock;
static uint64_t sent, connects;

static void flush(struct outq *q) {
    int done = 0;
    while (done < q->n) {
        int r = sendmmsg(q->fd, q->msg + done, (unsigned)(q->n - done), 0);
        if (r <= 0) break; /* a full send buffer: the slots time out and resend */
        done += r;
    }
    sent += (uint64_t)done;
    q->n = 0;
}

static void send_req(int i, uint64_t t) {
    struct slot *s = &slots[i];
    struct outq *q = &outs[i % nsock];
    if (q->n == BATCH) flush(q);
    uint8_t *buf = q->buf[q->n];
    size_t len;
    /* The slot's index in the high bits: the reply finds its slot. */
    s->tid = ((uint32_t)i << 16) | ((uint32_t)random() & 0xFFFF);
    if (!s->connected || t - s->conn_at > 50000000u) {
        s->connected = 0;
        put64(buf, 0x41727101980ULL);
        put32(buf + 8, 0);
        put32(buf + 12, s->tid);
        len = 16;
        connects++;
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
        len = REQ;
    }
    q->iov[q->n].iov_base = buf;
    q->iov[q->n].iov_len = len;
    q->n++;
    s->sent_at = t;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST DURATION_S INFLIGHT HASHES PORT [PORT...]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    double duration = atof(argv[2]);
    int nslots = atoi(argv[3]);
    int nports = argc - 5;
    if (nslots < 1 || nslots > MAXSLOTS) return 2;
    nsock = getenv("UDP_LOAD_SOCKETS") ? atoi(getenv("UDP_LOAD_SOCKETS")) : 16;
    if (nsock > nslots) nsock = nslots;
    if (nsock < nports) nsock = nports;
    if (nsock < 1 || nsock > MAXSOCK) return 2;
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
    int ep = epoll_create1(0);
    if (ep < 0) { perror("epoll_create1"); return 1; }
    for (int k = 0; k < nsock; k++) {
        struct sockaddr_in a = {.sin_family = AF_INET};
        inet_pton(AF_INET, host, &a.sin_addr);
        a.sin_port = htons((uint16_t)atoi(argv[5 + k % nports]));
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int size = 4 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("socket");
            return 1;
        }
        struct outq *q = &outs[k];
        q->fd = fd;
        for (int j = 0; j < BATCH; j++) {
            q->msg[j].msg_hdr.msg_iov = &q->iov[j];
            q->msg[j].msg_hdr.msg_iovlen = 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)k};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { perror("epoll_ctl"); return 1; }
    }
    static uint8_t rbuf[BATCH][2048];
    struct iovec riov[BATCH];
    struct mmsghdr rmsg[BATCH];
    memset(rmsg, 0, sizeof rmsg);
    for (int j = 0; j < BATCH; j++) {
        riov[j].iov_base = rbuf[j];
        riov[j].iov_len = sizeof rbuf[j];
        rmsg[j].msg_hdr.msg_iov = &riov[j];
        rmsg[j].msg_hdr.msg_iovlen = 1;
    }
    double cpu_start = cpu_seconds();
    uint64_t start = now_us(), end = start + (uint64_t)(duration * 1e6), next_scan = start;
    uint64_t requests = 0, timeouts = 0, errors = 0, stale = 0, maxlat = 0, got_peers = 0;
    int started = 0;
    uint64_t next_group = start;
    struct epoll_event evs[MAXSOCK];
    for (;;) {
        uint64_t t = now_us();
        if (t >= end) break;
        if (started < nslots && t >= next_group) {
            for (int stop = started + 64; started < nslots && started < stop; started++)
                send_req(started, t);
            next_group = t + 1000u;
        }
        int n = epoll_wait(ep, evs, nsock, started < nslots ? 1 : 50);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        t = now_us();
        for (int e = 0; e < n; e++) {
            int fd = outs[evs[e].data.u32].fd;
            int got;
            while ((got = recvmmsg(fd, rmsg, BATCH, MSG_DONTWAIT, NULL)) > 0) {
                for (int j = 0; j < got; j++) {
                    const uint8_t *buf = rbuf[j];
                    unsigned len = rmsg[j].msg_len;
                    if (len < 8) continue;
                    uint32_t tid = get32(buf + 4);
                    int i = (int)(tid >> 16);
                    if (i >= nslots || slots[i].tid != tid) { stale++; continue; }
                    struct slot *s = &slots[i];
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
                        got_peers += (len - 20) / 6;
                    } else {
                        errors++;
                        s->connected = 0;
                    }
                    send_req(i, t);
                }
                if (got < BATCH) break;
            }
        }
        if (t >= next_scan) {
            for (int i = 0; i < started; i++) {
                if (t - slots[i].sent_at > 1000000u) {
                    timeouts++;
                    slots[i].connected = 0;
                    send_req(i, t);
                }
            }
            next_scan = t + 100000u;
        }
        for (int k = 0; k < nsock; k++)
            if (outs[k].n) flush(&outs[k]);
    }
    uint64_t elapsed = now_us() - start;
    double cpu = cpu_seconds() - cpu_start;
    uint64_t pct[3] = {0, 0, 0}, seen = 0;
    double want[3] = {0.50, 0.90, 0.99};
    int k = 0;
    for (int us = 0; us <= HIST_US && k < 3; us++) {
        seen += hist[us];
        while (k < 3 && requests && seen >= want[k] * requests) pct[k++] = (uint64_t)us;
    }
    printf("UDPJSON {\"requests\": %llu, \"duration_us\": %llu, \"timeouts\": %llu, "
           "\"errors\": %llu, \"stale\": %llu, \"sent\": %llu, \"connects\": %llu, "
           "\"inflight\": %d, \"sockets\": %d, \"cpu_s\": %.3f, \"peers_per_reply\": %.2f, "
           "\"p50_us\": %llu, \"p90_us\": %llu, \"p99_us\": %llu, \"max_us\": %llu}\n",
           (unsigned long long)requests, (unsigned long long)elapsed,
           (unsigned long long)timeouts, (unsigned long long)errors,
           (unsigned long long)stale, (unsigned long long)sent,
           (unsigned long long)connects, nslots, nsock, cpu,
           requests ? (double)got_peers / requests : 0.0,
           (unsigned long long)pct[0], (unsigned long long)pct[1], (unsigned long long)pct[2],
           (unsigned long long)maxlat);
    return 0;
}

/* murder.tracker._udpfast: the UDP tracker's drain loop and announce checks in C.
 *
 * Why C: the pure-Python UDP tracker costs ~15.6 us per announce against
 * opentracker's 6.5 us, and every pure-Python change to the loop was measured
 * and exhausted (bench/README.md, "Session 5 tracker", section 3).  The
 * Python part that is cheap to move is the machinery around the store:
 * recvfrom/sendto through the socket module (address tuples, bytes objects),
 * the struct unpack and pack, the connection-id and field checks.  That is
 * what this file does; the measurement is in bench/README.md, "Session 6
 * tracker: the C announce path".
 *
 * What stays in Python, on purpose: everything that decides or remembers.
 * A well-formed IPv4 announce whose checks all pass (connection id found in
 * the core's memo dict, known event, no --auth-secret, port not 0, no ip
 * field) goes to UDPTrackerCore._apply, the same method the pure-Python path
 * calls after the same checks: store update, logging, peer list, counters.
 * Every other datagram (connects, scrapes, IPv6 senders, anything malformed
 * or refused) goes whole to UDPTrackerCore.handle, the pure-Python path.  A
 * check here only ever says "fast" or "ask Python", never "refuse", so the
 * two paths cannot disagree about an answer.
 *
 * Memory safety: the datagram lives in one buffer of the size recvfrom was
 * given; the only fixed-offset reads are of announces, after checking the
 * length is at least ANNOUNCE_SIZE.  Nothing is written to the buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* BEP 15 announce: connection_id:Q action:I transaction:I info_hash:20s
 * peer_id:20s downloaded:Q left:Q uploaded:Q event:I ip:I key:4s num_want:i
 * port:H (udpcodec.ANNOUNCE_FIELDS). */
#define ANNOUNCE_SIZE 98
#define ANNOUNCE 1
/* Reply head: action, transaction, interval, leechers, seeders (u32 each). */
#define REPLY_HEAD 20

/* udpcodec.EVENTS[0..3]: the same str objects the Python path uses. */
static PyObject *event_names[4];
static PyObject *str_handle, *str_apply, *str_crash, *str_valid_ids, *str_bucket_end,
    *str_app, *str_auth, *str_interval, *str_clock, *str_seconds, *str_dropped;
/* For the store's update path (store_update below). */
static PyObject *str_store, *str_handout, *str_verbose, *str_numwant_default,
    *str_numwant_max, *str_torrents, *str_peers, *str_ip, *str_port, *str_left,
    *str_uploaded, *str_downloaded, *str_last_seen, *str_rate, *str_up_rate,
    *str_progress_at, *str_completed_at, *str_key, *str_c4, *str_pos4, *str_list4,
    *str_seeders, *str_reported_uploaded, *str_reported_downloaded, *str_answered,
    *str_counts, *str_ok_keys;
/* murder.tracker.store: PeerStore, Peer, Torrent, RATE_WEIGHT, _MIN_RATE_GAP. */
static PyObject *peer_store_type, *peer_type, *torrent_type;
static double rate_weight, min_rate_gap;

static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t get32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

/* The reply to one datagram: an optional 20-byte announce head, then body
 * (bytes, owned) less the cut_len bytes at cut_at (the asking peer's own
 * entry in a cached compact list), or no reply at all when body is NULL. */
typedef struct {
    unsigned char head[REPLY_HEAD];
    int head_len;
    PyObject *body;
    Py_ssize_t cut_at, cut_len;
} reply_t;

/* Whether Python int `id` equals `cid` (ids are 64-bit unsigned). */
static int id_is(PyObject *id, uint64_t cid) {
    if (!PyLong_CheckExact(id))
        return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(id);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return v == cid;
}

/* A u32 field of the reply from a Python int; -1 with an exception if it
 * does not fit (struct.pack(">I") raises the same on the Python path). */
static int as_u32(PyObject *value, uint32_t *out) {
    unsigned long v = PyLong_AsUnsignedLong(value);
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (v > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_OverflowError, "reply field does not fit 32 bits");
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* A bug while answering (an Exception): what UDPTrackerCore.handle does with
 * one, through core._crash (counted, logged, rate limited); no reply.
 * Anything that is not an Exception (KeyboardInterrupt, SystemExit) goes on. */
static int crash(PyObject *core, Py_ssize_t size, PyObject *host) {
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *size_obj = PyLong_FromSsize_t(size);
    PyObject *r = size_obj == NULL ? NULL
        : PyObject_CallMethodObjArgs(core, str_crash, size_obj, host, value, NULL);
    Py_XDECREF(size_obj);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* What _apply returned, as the reply: (leechers, seeders, compact peers)
 * becomes an announce reply packed like _pack_reply does; bytes (an error
 * reply made by Python) is sent as is; None is no reply.  -1 with an
 * exception for anything else, or a count that does not fit 32 bits. */
static int pack(PyObject *app, uint32_t transaction, PyObject *result, reply_t *out) {
    if (result == Py_None)
        return 0;
    if (PyBytes_Check(result)) {
        Py_INCREF(result);
        out->body = result;
        return 0;
    }
    if (!PyTuple_CheckExact(result) || PyTuple_GET_SIZE(result) != 3
            || !PyBytes_Check(PyTuple_GET_ITEM(result, 2))) {
        PyErr_SetString(PyExc_TypeError, "_apply must return (int, int, bytes), bytes or None");
        return -1;
    }
    uint32_t interval, leechers, seeders;
    PyObject *interval_obj = PyObject_GetAttr(app, str_interval);
    if (interval_obj == NULL)
        return -1;
    int bad = as_u32(interval_obj, &interval) < 0
              || as_u32(PyTuple_GET_ITEM(result, 0), &leechers) < 0
              || as_u32(PyTuple_GET_ITEM(result, 1), &seeders) < 0;
    Py_DECREF(interval_obj);
    if (bad)
        return -1;
    put32(out->head, ANNOUNCE);
    put32(out->head + 4, transaction);
    put32(out->head + 8, interval);
    put32(out->head + 12, leechers);
    put32(out->head + 16, seeders);
    out->head_len = REPLY_HEAD;
    out->body = PyTuple_GET_ITEM(result, 2);
    Py_INCREF(out->body);
    return 0;
}

/* A borrowed-free attribute read: the int64 value of obj.name, or 0 (no
 * exception) when it is not an int in [0, 2**63), which sends the announce to
 * Python.  -1 on an exception. */
static int get_i64(PyObject *obj, PyObject *name, int64_t *out) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    int overflow = 0;
    long long x = PyLong_CheckExact(v) ? PyLong_AsLongLongAndOverflow(v, &overflow) : -1;
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (overflow || x < 0)
        return 0;
    *out = x;
    return 1;
}

/* obj.name as a C double if it is a float (0 otherwise, -1 on an exception). */
static int get_f64(PyObject *obj, PyObject *name, double *out) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    int ok = PyFloat_CheckExact(v);
    if (ok)
        *out = PyFloat_AS_DOUBLE(v);
    Py_DECREF(v);
    return ok;
}

static int set_f64(PyObject *obj, PyObject *name, double value) {
    PyObject *v = PyFloat_FromDouble(value);
    int r = v == NULL ? -1 : PyObject_SetAttr(obj, name, v);
    Py_XDECREF(v);
    return r;
}

static int set_i64(PyObject *obj, PyObject *name, int64_t value) {
    PyObject *v = PyLong_FromLongLong(value);
    int r = v == NULL ? -1 : PyObject_SetAttr(obj, name, v);
    Py_XDECREF(v);
    return r;
}

/* obj.name += delta (Python ints: the store's byte totals grow without bound). */
static int add_to(PyObject *obj, PyObject *name, int64_t delta) {
    PyObject *old = PyObject_GetAttr(obj, name);
    if (old == NULL)
        return -1;
    PyObject *d = PyLong_FromLongLong(delta);
    PyObject *sum = d == NULL ? NULL : PyNumber_Add(old, d);
    Py_DECREF(old);
    Py_XDECREF(d);
    if (sum == NULL)
        return -1;
    int r = PyObject_SetAttr(obj, name, sum);
    Py_DECREF(sum);
    return r;
}

/* The peers of a reply to an IPv4 sender, as Torrent.compact_peers gives
 * them when no random sample is needed: the torrent's cached compact list,
 * less the asker's own entry, if that is at most `want` peers.  1 with *body
 * (a new reference: the cached bytes, or b"" for no peers) and the asker's
 * entry to cut out of it; 0 when Python must pick (cache not built, a sample
 * needed); -1 on an exception. */
static int cached_peers(PyObject *torrent, PyObject *peer_id, int64_t want,
                        PyObject **body, Py_ssize_t *cut_at, Py_ssize_t *cut_len) {
    *cut_at = *cut_len = 0;
    PyObject *c4 = PyObject_GetAttr(torrent, str_c4);
    if (c4 == NULL)
        return -1;
    if (!PyBytes_CheckExact(c4)) { /* None: not built yet */
        Py_DECREF(c4);
        return 0;
    }
    if (want <= 0) {
        Py_DECREF(c4);
        *body = PyBytes_FromStringAndSize(NULL, 0);
        return *body == NULL ? -1 : 1;
    }
    PyObject *list4 = PyObject_GetAttr(torrent, str_list4);
    PyObject *pos4 = list4 == NULL ? NULL : PyObject_GetAttr(torrent, str_pos4);
    int r = 0;
    if (pos4 != NULL && PyList_CheckExact(list4) && PyDict_CheckExact(pos4)) {
        Py_ssize_t n4 = PyList_GET_SIZE(list4), index = -1;
        PyObject *me = PyDict_GetItemWithError(pos4, peer_id); /* borrowed */
        if (me == NULL && PyErr_Occurred())
            r = -1;
        else if (me != NULL && (index = PyLong_AsSsize_t(me)) == -1 && PyErr_Occurred())
            PyErr_Clear(); /* not an index: let Python look */
        else if (n4 - (me != NULL) <= want) {
            r = 1;
            if (me != NULL) {
                *cut_at = index * 6;
                *cut_len = 6;
                if (index < 0 || *cut_at + 6 > PyBytes_GET_SIZE(c4))
                    r = 0; /* caches out of step: let Python look */
            }
        }
    } else if (PyErr_Occurred()) {
        r = -1;
    }
    Py_XDECREF(list4);
    Py_XDECREF(pos4);
    if (r == 1 && PyBytes_GET_SIZE(c4) - *cut_len == 0) {
        Py_DECREF(c4); /* no peers but the asker */
        *cut_at = *cut_len = 0;
        c4 = PyBytes_FromStringAndSize(NULL, 0);
        if (c4 == NULL)
            return -1;
    }
    if (r == 1)
        *body = c4;
    else
        Py_DECREF(c4);
    return r;
}

/* _apply's bookkeeping of an answered regular update: core.answered += 1 and
 * the /metrics count core._counts[core._ok_keys[""]] += 1.  -1 on an
 * exception. */
static int count_update(PyObject *core) {
    if (add_to(core, str_answered, 1) < 0)
        return -1;
    PyObject *counts = PyObject_GetAttr(core, str_counts);
    PyObject *ok_keys = counts == NULL ? NULL : PyObject_GetAttr(core, str_ok_keys);
    PyObject *key = ok_keys == NULL ? NULL : PyObject_GetItem(ok_keys, event_names[0]);
    PyObject *n = key == NULL ? NULL : PyDict_GetItemWithError(counts, key); /* borrowed */
    PyObject *n1 = NULL;
    if (key != NULL && !PyErr_Occurred()) {
        PyObject *one = PyLong_FromLong(1);
        n1 = one == NULL ? NULL : (n == NULL ? Py_NewRef(one) : PyNumber_Add(n, one));
        Py_XDECREF(one);
    }
    int r = n1 == NULL ? -1 : PyDict_SetItem(counts, key, n1);
    Py_XDECREF(n1);
    Py_XDECREF(key);
    Py_XDECREF(ok_keys);
    Py_XDECREF(counts);
    return r;
}

/* The regular re-announce (event 0) of a peer the in-memory store already
 * holds at the same address, answered from the torrent's cached compact
 * list: PeerStore.update's branch for an existing peer, _track_progress, and
 * the rest of UDPTrackerCore._apply, without a Python call.  This is nearly
 * every announce of a deploy after its first seconds (hosts re-announce every
 * few seconds, unchanged but for their counters), and the Python store work
 * was two thirds of the C path's announce (bench/README.md, "Session 6").
 *
 * Everything is read and checked before anything is written; any case it does
 * not cover (another store or a handout policy, verbose logging, a new or
 * moved peer, counters past 2**63, a peer list needing a random sample, a
 * cache not built) returns 0 and the announce goes to _apply, untouched.
 * tests/unit/test_tracker_udp.py runs random announce sequences through both
 * and compares the whole store after each, so the two cannot drift apart.
 * Returns 1 when answered (out filled), 0 for _apply, -1 on an exception. */
static int store_update(PyObject *core, PyObject *app, const unsigned char *buf,
                        PyObject *host, long port, int32_t numwant, reply_t *out) {
    uint64_t raw_left = get64(buf + 64), raw_up = get64(buf + 72), raw_down = get64(buf + 56);
    if (raw_left >> 63 || raw_up >> 63 || raw_down >> 63)
        return 0;
    int64_t left = (int64_t)raw_left, uploaded = (int64_t)raw_up;
    int64_t downloaded = (int64_t)raw_down;
    int64_t want = numwant, bound, peer_port, old_left, old_up, old_down, seeders;
    double now, last_seen, rate, up_rate;
    Py_ssize_t npeers, cut_at, cut_len;
    int r, answered;
    PyObject *store = NULL, *torrent = NULL, *peer = NULL, *peer_id = NULL, *peers = NULL;
    PyObject *now_obj = NULL, *v = NULL;

    store = PyObject_GetAttr(core, str_store);
    if (store == NULL)
        goto error;
    if ((PyObject *)Py_TYPE(store) != peer_store_type)
        goto python;
    if ((v = PyObject_GetAttr(store, str_handout)) == NULL)
        goto error;
    if (v != Py_None)
        goto python;
    Py_CLEAR(v);
    if ((v = PyObject_GetAttr(app, str_verbose)) == NULL || (r = PyObject_IsTrue(v)) < 0)
        goto error;
    if (r)
        goto python; /* every announce is logged: Python does it */
    Py_CLEAR(v);
    /* numwant, clamped as _apply does (event 0: not "stopped"). */
    if (want < 0 && (r = get_i64(app, str_numwant_default, &want)) <= 0)
        goto done_r;
    if ((r = get_i64(app, str_numwant_max, &bound)) <= 0)
        goto done_r;
    if (want > bound)
        want = bound;

    /* store.torrents[info_hash].peers[peer_id], both already there. */
    if ((v = PyObject_GetAttr(store, str_torrents)) == NULL)
        goto error;
    if (!PyDict_CheckExact(v))
        goto python;
    PyObject *info_hash = PyBytes_FromStringAndSize((const char *)buf + 16, 20);
    if (info_hash == NULL)
        goto error;
    torrent = PyDict_GetItemWithError(v, info_hash);
    Py_DECREF(info_hash);
    Py_XINCREF(torrent);
    Py_CLEAR(v);
    if (torrent == NULL || (PyObject *)Py_TYPE(torrent) != torrent_type)
        goto python_or_error;
    if ((peer_id = PyBytes_FromStringAndSize((const char *)buf + 36, 20)) == NULL)
        goto error;
    if ((v = PyObject_GetAttr(torrent, str_peers)) == NULL)
        goto error;
    if (!PyDict_CheckExact(v))
        goto python;
    peer = PyDict_GetItemWithError(v, peer_id);
    Py_XINCREF(peer);
    npeers = PyDict_GET_SIZE(v);
    Py_CLEAR(v);
    if (peer == NULL || (PyObject *)Py_TYPE(peer) != peer_type)
        goto python_or_error;

    /* The same address (else the store re-checks the key and rebuilds caches). */
    if ((r = get_i64(peer, str_port, &peer_port)) <= 0)
        goto done_r;
    if (peer_port != port)
        goto python;
    if ((v = PyObject_GetAttr(peer, str_ip)) == NULL)
        goto error;
    if (!PyUnicode_CheckExact(v) || PyUnicode_Compare(v, host) != 0)
        goto python_or_error;
    Py_CLEAR(v);
    if ((r = cached_peers(torrent, peer_id, want, &peers, &cut_at, &cut_len)) <= 0)
        goto done_r;

    /* The peer's numbers: ints below 2**63 and floats, or Python decides. */
    if ((r = get_i64(peer, str_left, &old_left)) <= 0
            || (r = get_i64(peer, str_uploaded, &old_up)) <= 0
            || (r = get_i64(peer, str_downloaded, &old_down)) <= 0
            || (r = get_i64(torrent, str_seeders, &seeders)) <= 0
            || (r = get_f64(peer, str_last_seen, &last_seen)) <= 0
            || (r = get_f64(peer, str_rate, &rate)) <= 0
            || (r = get_f64(peer, str_up_rate, &up_rate)) <= 0)
        goto done_r;
    if ((v = PyObject_GetAttr(peer, str_completed_at)) == NULL)
        goto error;
    int was_completed = v != Py_None;
    Py_CLEAR(v);
    if ((v = PyObject_GetAttr(store, str_clock)) == NULL)
        goto error;
    now_obj = PyObject_CallMethodNoArgs(v, str_seconds);
    Py_CLEAR(v);
    if (now_obj == NULL)
        goto error;
    if (!PyFloat_CheckExact(now_obj))
        goto python;
    now = PyFloat_AS_DOUBLE(now_obj);

    /* From here on: PeerStore.update's writes, in its order. */
    if ((old_left == 0) != (left == 0)) {
        seeders += left == 0 ? 1 : -1;
        if (set_i64(torrent, str_seeders, seeders) < 0)
            goto error;
    }
    /* _track_progress(peer, left, uploaded, downloaded, "", now) */
    int64_t fell = old_left - left;
    if ((fell > 0 || downloaded > old_down)
            && PyObject_SetAttr(peer, str_progress_at, now_obj) < 0)
        goto error;
    if (!was_completed && left == 0 && old_left > 0
            && PyObject_SetAttr(peer, str_completed_at, now_obj) < 0)
        goto error;
    double gap = now - last_seen;
    if (gap >= min_rate_gap) {
        double w = rate_weight;
        int64_t up = uploaded - old_up;
        if (set_f64(peer, str_rate, (1 - w) * rate + w * ((double)(fell > 0 ? fell : 0) / gap)) < 0
                || set_f64(peer, str_up_rate,
                           (1 - w) * up_rate + w * ((double)(up > 0 ? up : 0) / gap)) < 0)
            goto error;
    }
    if (uploaded > old_up && add_to(store, str_reported_uploaded, uploaded - old_up) < 0)
        goto error;
    if (downloaded > old_down && add_to(store, str_reported_downloaded, downloaded - old_down) < 0)
        goto error;
    /* Unchanged values are left as they are (equal objects either way): most
     * re-announces change only the time. */
    if ((left != old_left && set_i64(peer, str_left, left) < 0)
            || (uploaded != old_up && set_i64(peer, str_uploaded, uploaded) < 0)
            || (downloaded != old_down && set_i64(peer, str_downloaded, downloaded) < 0)
            || PyObject_SetAttr(peer, str_last_seen, now_obj) < 0)
        goto error;
    if ((v = PyObject_GetAttr(peer, str_key)) == NULL)
        goto error;
    if (!PyBytes_CheckExact(v) || PyBytes_GET_SIZE(v) != 4 || memcmp(PyBytes_AS_STRING(v), buf + 88, 4)) {
        Py_DECREF(v);
        v = PyBytes_FromStringAndSize((const char *)buf + 88, 4);
        if (v == NULL || PyObject_SetAttr(peer, str_key, v) < 0)
            goto error;
    }
    Py_CLEAR(v);
    if (count_update(core) < 0)
        goto error;

    /* Reply: counts after the update (Torrent.leechers), then the peers. */
    uint32_t interval;
    if ((v = PyObject_GetAttr(app, str_interval)) == NULL || as_u32(v, &interval) < 0)
        goto error;
    int64_t leechers = (int64_t)npeers - seeders;
    if (leechers < 0 || leechers > 0xFFFFFFFF || seeders < 0 || seeders > 0xFFFFFFFF) {
        PyErr_SetString(PyExc_OverflowError, "reply count does not fit 32 bits");
        goto error;
    }
    put32(out->head, ANNOUNCE);
    put32(out->head + 4, get32(buf + 12));
    put32(out->head + 8, interval);
    put32(out->head + 12, (uint32_t)leechers);
    put32(out->head + 16, (uint32_t)seeders);
    out->head_len = REPLY_HEAD;
    out->body = peers;
    peers = NULL;
    out->cut_at = cut_at;
    out->cut_len = cut_len;
    answered = 1;
    goto done;

python_or_error: /* a lookup found nothing (Python's case) or raised */
    if (PyErr_Occurred())
        goto error;
    goto python;
done_r: /* a get_* or cached_peers said no (r == 0) or raised (r < 0) */
    if (r < 0)
        goto error;
python:
    answered = 0;
    goto done;
error:
    answered = -1;
done:
    Py_XDECREF(v);
    Py_XDECREF(store);
    Py_XDECREF(torrent);
    Py_XDECREF(peer);
    Py_XDECREF(peer_id);
    Py_XDECREF(peers);
    Py_XDECREF(now_obj);
    return answered;
}

/* The common announce, if every check of UDPTrackerCore._announce passes.
 * Returns 1 when answered (out filled), 0 to hand the datagram to Python's
 * handle(), -1 on an exception that must propagate. */
static int fast_announce(PyObject *core, const unsigned char *buf, Py_ssize_t len,
                         PyObject *host, reply_t *out) {
    uint64_t cid = get64(buf);
    uint32_t transaction = get32(buf + 12);
    uint32_t number = get32(buf + 80);
    uint32_t ip = get32(buf + 84);
    int32_t numwant = (int32_t)get32(buf + 92);
    long port = ((long)buf[96] << 8) | buf[97];
    int ok = 0;

    /* Same order and same tests as _announce; any miss: ask Python. */
    PyObject *memo = PyObject_GetAttr(core, str_valid_ids);
    if (memo == NULL)
        return -1;
    if (PyDict_CheckExact(memo)) {
        PyObject *ids = PyDict_GetItemWithError(memo, host); /* borrowed */
        if (ids == NULL && PyErr_Occurred()) {
            Py_DECREF(memo);
            return -1;
        }
        if (ids != NULL && PyTuple_CheckExact(ids) && PyTuple_GET_SIZE(ids) == 2)
            ok = id_is(PyTuple_GET_ITEM(ids, 0), cid) || id_is(PyTuple_GET_ITEM(ids, 1), cid);
    }
    Py_DECREF(memo);
    if (!ok)
        return 0;
    /* The memo is for the current bucket only: past its end Python renews it. */
    PyObject *clock = PyObject_GetAttr(core, str_clock);
    if (clock == NULL)
        return -1;
    PyObject *now_obj = PyObject_CallMethodNoArgs(clock, str_seconds);
    Py_DECREF(clock);
    if (now_obj == NULL)
        return -1;
    double now = PyFloat_AsDouble(now_obj);
    Py_DECREF(now_obj);
    PyObject *end_obj = PyObject_GetAttr(core, str_bucket_end);
    if (end_obj == NULL)
        return -1;
    double end = PyFloat_AsDouble(end_obj);
    Py_DECREF(end_obj);
    if (PyErr_Occurred())
        return -1;
    if (now >= end || number > 3 || port == 0 || ip != 0)
        return 0;
    PyObject *app = PyObject_GetAttr(core, str_app);
    if (app == NULL)
        return -1;
    PyObject *auth = PyObject_GetAttr(app, str_auth);
    if (auth == NULL) {
        Py_DECREF(app);
        return -1;
    }
    Py_DECREF(auth);
    if (auth != Py_None) {
        Py_DECREF(app);
        return 0;
    }

    if (number == 0) { /* a regular update: the store's common case, in C */
        int r = store_update(core, app, buf, host, port, numwant, out);
        if (r != 0) {
            Py_DECREF(app);
            return r > 0 ? 1 : (crash(core, len, host) < 0 ? -1 : 1);
        }
    }

    /* _apply(transaction, info_hash, peer_id, downloaded, left, uploaded,
     *        event, key, numwant, port, address, host) */
    PyObject *args[13] = {NULL};
    args[0] = core;
    args[1] = PyLong_FromUnsignedLong(transaction);
    args[2] = PyBytes_FromStringAndSize((const char *)buf + 16, 20);
    args[3] = PyBytes_FromStringAndSize((const char *)buf + 36, 20);
    args[4] = PyLong_FromUnsignedLongLong(get64(buf + 56));
    args[5] = PyLong_FromUnsignedLongLong(get64(buf + 64));
    args[6] = PyLong_FromUnsignedLongLong(get64(buf + 72));
    args[7] = event_names[number];
    args[8] = PyBytes_FromStringAndSize((const char *)buf + 88, 4);
    args[9] = PyLong_FromLong(numwant);
    args[10] = PyLong_FromLong(port);
    args[11] = host;
    args[12] = host;
    PyObject *result = NULL;
    int made = 1;
    for (int i = 1; i <= 10; i++)
        if (args[i] == NULL)
            made = 0;
    if (made)
        result = PyObject_VectorcallMethod(str_apply, args, 13, NULL);
    for (int i = 1; i <= 10; i++)
        if (i != 7)
            Py_XDECREF(args[i]);
    if (!made) {
        Py_DECREF(app);
        return -1;
    }

    int failed = result == NULL || pack(app, transaction, result, out) < 0;
    Py_XDECREF(result);
    Py_DECREF(app);
    if (failed)
        return crash(core, len, host) < 0 ? -1 : 1;
    return 1;
}

/* One datagram from (host, port): the fast path if it applies, else Python's
 * handle().  0 with `out` filled (body NULL: no reply), -1 on an exception to
 * propagate.  `v4`: the sender is an IPv4 address (the fast path is IPv4 only;
 * IPv6 and v4-mapped senders take Python's path, which maps them). */
static int answer_one(PyObject *core, const unsigned char *buf, Py_ssize_t len,
                      PyObject *host, long port, int v4, reply_t *out) {
    out->head_len = 0;
    out->body = NULL;
    out->cut_at = out->cut_len = 0;
    if (v4 && len >= ANNOUNCE_SIZE && get32(buf + 8) == ANNOUNCE) {
        int r = fast_announce(core, buf, len, host, out);
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
    PyObject *data = PyBytes_FromStringAndSize((const char *)buf, len);
    PyObject *port_obj = PyLong_FromLong(port);
    PyObject *reply = NULL;
    if (data != NULL && port_obj != NULL)
        reply = PyObject_CallMethodObjArgs(core, str_handle, data, host, port_obj, NULL);
    Py_XDECREF(data);
    Py_XDECREF(port_obj);
    if (reply == NULL)
        return -1;
    if (reply == Py_None) {
        Py_DECREF(reply);
        return 0;
    }
    if (!PyBytes_Check(reply)) {
        Py_DECREF(reply);
        PyErr_SetString(PyExc_TypeError, "handle() must return bytes or None");
        return -1;
    }
    out->body = reply;
    return 0;
}

/* The str of an IPv4 sender, from a small direct-mapped cache: a fleet is a
 * few thousand hosts that announce again and again, and a new str per
 * datagram cost inet_ntop's sprintf, an allocation and, in each dict it is
 * looked up in (the id memo, the trusted networks), a fresh hash: a reused
 * str keeps its hash.  Returns a new reference, NULL on an exception. */
#define HOST_CACHE 4096
static struct {
    uint32_t addr;
    PyObject *host;
} host_cache[HOST_CACHE];

static PyObject *ipv4_host(const struct in_addr *in) {
    uint32_t addr = in->s_addr;
    size_t slot = (uint32_t)(addr * 2654435761u) % HOST_CACHE;
    if (host_cache[slot].host != NULL && host_cache[slot].addr == addr) {
        Py_INCREF(host_cache[slot].host);
        return host_cache[slot].host;
    }
    char text[INET_ADDRSTRLEN];
    if (inet_ntop(AF_INET, in, text, sizeof text) == NULL)
        text[0] = '\0';
    PyObject *host = PyUnicode_FromString(text);
    if (host == NULL)
        return NULL;
    Py_XSETREF(host_cache[slot].host, Py_NewRef(host));
    host_cache[slot].addr = addr;
    return host;
}

PyDoc_STRVAR(drain_doc,
"drain(fd, batch, size, core, protocol) -> (datagrams, errno)\n\n"
"Answer up to `batch` queued datagrams of non-blocking UDP socket `fd`, as\n"
"TrackerUDPPort.doRead does in Python: each read with recvfrom(size), answered\n"
"through `core` and sent back to its sender; a reply the kernel refuses calls\n"
"protocol.dropped().  Stops early when nothing is queued.  Returns how many\n"
"datagrams were read and the errno of a read error that ended the drain (0\n"
"for none: EAGAIN, and ECONNREFUSED from an earlier reply, end it quietly).");

static PyObject *drain(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "drain(fd, batch, size, core, protocol)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    Py_ssize_t batch = PyLong_AsSsize_t(args[1]);
    Py_ssize_t size = PyLong_AsSsize_t(args[2]);
    PyObject *core = args[3], *protocol = args[4];
    if (PyErr_Occurred())
        return NULL;
    if (size < 1 || size > 65536) {
        PyErr_SetString(PyExc_ValueError, "size must be 1-65536");
        return NULL;
    }
    unsigned char *buf = PyMem_Malloc(size);
    if (buf == NULL)
        return PyErr_NoMemory();
    Py_ssize_t n = 0;
    int err = 0;
    char text[INET6_ADDRSTRLEN];
    while (n < batch) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        ssize_t got = recvfrom((int)fd, buf, size, MSG_DONTWAIT, (struct sockaddr *)&sa, &salen);
        if (got < 0) {
            if (errno == EINTR) { /* retried, as the socket module does (PEP 475) */
                if (PyErr_CheckSignals() < 0)
                    goto fail;
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNREFUSED)
                err = errno;
            break;
        }
        n++;
        long port = 0;
        int v4 = 0;
        PyObject *host;
        if (sa.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&sa;
            host = ipv4_host(&in->sin_addr);
            port = ntohs(in->sin_port);
            v4 = 1;
        } else {
            const char *shown = "";
            if (sa.ss_family == AF_INET6) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
                shown = inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
                port = ntohs(in6->sin6_port);
            }
            host = PyUnicode_FromString(shown ? shown : "");
        }
        if (host == NULL)
            goto fail;
        reply_t reply;
        int r = answer_one(core, buf, got, host, port, v4, &reply);
        Py_DECREF(host);
        if (r < 0)
            goto fail;
        if (reply.body == NULL)
            continue;
        /* Head, body up to the cut, body after it: no copy of the peer list. */
        struct iovec iov[3];
        int parts = 0;
        char *body = PyBytes_AS_STRING(reply.body);
        Py_ssize_t body_len = PyBytes_GET_SIZE(reply.body);
        if (reply.head_len) {
            iov[parts].iov_base = reply.head;
            iov[parts++].iov_len = reply.head_len;
        }
        if (reply.cut_len) {
            iov[parts].iov_base = body;
            iov[parts++].iov_len = reply.cut_at;
            iov[parts].iov_base = body + reply.cut_at + reply.cut_len;
            iov[parts++].iov_len = body_len - reply.cut_at - reply.cut_len;
        } else {
            iov[parts].iov_base = body;
            iov[parts++].iov_len = body_len;
        }
        struct msghdr msg = {.msg_name = &sa, .msg_namelen = salen, .msg_iov = iov,
                             .msg_iovlen = parts};
        ssize_t sent;
        do {
            sent = sendmsg((int)fd, &msg, MSG_DONTWAIT);
        } while (sent < 0 && errno == EINTR && PyErr_CheckSignals() == 0);
        Py_DECREF(reply.body);
        if (sent < 0) {
            if (PyErr_Occurred())
                goto fail;
            /* Full buffer, unroutable sender: dropped, as UDP may (and as
             * TrackerUDPPort.doRead does). */
            PyObject *d = PyObject_CallMethodNoArgs(protocol, str_dropped);
            if (d == NULL)
                goto fail;
            Py_DECREF(d);
        }
    }
    PyMem_Free(buf);
    return Py_BuildValue("(ni)", n, err);
fail:
    PyMem_Free(buf);
    return NULL;
}

PyDoc_STRVAR(answer_doc,
"answer(core, data, host, port) -> bytes | None\n\n"
"The reply drain() would send to `data` from (host, port), without a socket:\n"
"the same C checks and packing, for tests.  `host` without ':' counts as an\n"
"IPv4 sender (what recvfrom gives on an AF_INET socket).");

static PyObject *answer(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyBytes_Check(args[1]) || !PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "answer(core, data: bytes, host: str, port: int)");
        return NULL;
    }
    long port = PyLong_AsLong(args[3]);
    if (port == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t colon = PyUnicode_FindChar(args[2], ':', 0, PyUnicode_GET_LENGTH(args[2]), 1);
    if (colon == -2)
        return NULL;
    reply_t reply;
    if (answer_one(args[0], (const unsigned char *)PyBytes_AS_STRING(args[1]),
                   PyBytes_GET_SIZE(args[1]), args[2], port, colon == -1, &reply) < 0)
        return NULL;
    if (reply.body == NULL)
        Py_RETURN_NONE;
    if (!reply.head_len && !reply.cut_len)
        return reply.body;
    const char *body = PyBytes_AS_STRING(reply.body);
    Py_ssize_t body_len = PyBytes_GET_SIZE(reply.body);
    Py_ssize_t after = reply.cut_at + reply.cut_len;
    PyObject *whole = PyBytes_FromStringAndSize(NULL, reply.head_len + body_len - reply.cut_len);
    if (whole != NULL) {
        char *to = PyBytes_AS_STRING(whole);
        memcpy(to, reply.head, reply.head_len);
        to += reply.head_len;
        if (reply.cut_len) {
            memcpy(to, body, reply.cut_at);
            memcpy(to + reply.cut_at, body + after, body_len - after);
        } else {
            memcpy(to, body, body_len);
        }
    }
    Py_DECREF(reply.body);
    return whole;
}

static PyMethodDef methods[] = {
    {"drain", (PyCFunction)(void (*)(void))drain, METH_FASTCALL, drain_doc},
    {"answer", (PyCFunction)(void (*)(void))answer, METH_FASTCALL, answer_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "murder.tracker._udpfast",
    .m_doc = "The UDP tracker's drain loop and announce checks in C (see _udpfast.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__udpfast(void) {
    struct { PyObject **slot; const char *name; } names[] = {
        {&str_handle, "handle"}, {&str_apply, "_apply"}, {&str_crash, "_crash"},
        {&str_valid_ids, "_valid_ids"}, {&str_bucket_end, "_bucket_end"}, {&str_app, "app"},
        {&str_auth, "auth"}, {&str_interval, "interval"}, {&str_clock, "clock"},
        {&str_seconds, "seconds"}, {&str_dropped, "dropped"},
        {&str_store, "store"}, {&str_handout, "handout"}, {&str_verbose, "verbose"},
        {&str_numwant_default, "numwant_default"}, {&str_numwant_max, "numwant_max"},
        {&str_torrents, "torrents"}, {&str_peers, "peers"}, {&str_ip, "ip"},
        {&str_port, "port"}, {&str_left, "left"}, {&str_uploaded, "uploaded"},
        {&str_downloaded, "downloaded"}, {&str_last_seen, "last_seen"}, {&str_rate, "rate"},
        {&str_up_rate, "up_rate"}, {&str_progress_at, "progress_at"},
        {&str_completed_at, "completed_at"}, {&str_key, "key"}, {&str_c4, "_c4"},
        {&str_pos4, "_pos4"}, {&str_list4, "_list4"}, {&str_seeders, "seeders"},
        {&str_reported_uploaded, "reported_uploaded"},
        {&str_reported_downloaded, "reported_downloaded"}, {&str_answered, "answered"},
        {&str_counts, "_counts"}, {&str_ok_keys, "_ok_keys"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL)
            return NULL;
    /* The event names come from the codec, so both paths use one table. */
    PyObject *codec = PyImport_ImportModule("murder.tracker.udpcodec");
    if (codec == NULL)
        return NULL;
    PyObject *events = PyObject_GetAttrString(codec, "EVENTS");
    Py_DECREF(codec);
    if (events == NULL)
        return NULL;
    for (long i = 0; i < 4; i++) {
        PyObject *key = PyLong_FromLong(i);
        PyObject *name = key ? PyObject_GetItem(events, key) : NULL;
        Py_XDECREF(key);
        if (name == NULL || !PyUnicode_Check(name)) {
            Py_XDECREF(name);
            Py_DECREF(events);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ImportError, "udpcodec.EVENTS[0..3] must be str");
            return NULL;
        }
        event_names[i] = name;
    }
    Py_DECREF(events);
    /* The store's classes (exact types only: a subclass may change update) and
     * its rate constants, read from store.py so both paths use one value. */
    PyObject *store = PyImport_ImportModule("murder.tracker.store");
    if (store == NULL)
        return NULL;
    peer_store_type = PyObject_GetAttrString(store, "PeerStore");
    peer_type = PyObject_GetAttrString(store, "Peer");
    torrent_type = PyObject_GetAttrString(store, "Torrent");
    PyObject *weight = PyObject_GetAttrString(store, "RATE_WEIGHT");
    PyObject *gap = PyObject_GetAttrString(store, "_MIN_RATE_GAP");
    Py_DECREF(store);
    if (!peer_store_type || !peer_type || !torrent_type || !weight || !gap) {
        Py_XDECREF(weight);
        Py_XDECREF(gap);
        return NULL;
    }
    rate_weight = PyFloat_AsDouble(weight);
    min_rate_gap = PyFloat_AsDouble(gap);
    Py_DECREF(weight);
    Py_DECREF(gap);
    if (PyErr_Occurred())
        return NULL;
    return PyModule_Create(&module_def);
}

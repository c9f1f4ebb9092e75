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
 * (bytes, owned), or no reply at all when body is NULL. */
typedef struct {
    unsigned char head[REPLY_HEAD];
    int head_len;
    PyObject *body;
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
        const char *shown = "";
        if (sa.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&sa;
            shown = inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
            port = ntohs(in->sin_port);
            v4 = 1;
        } else if (sa.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
            shown = inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
            port = ntohs(in6->sin6_port);
        }
        PyObject *host = PyUnicode_FromString(shown ? shown : "");
        if (host == NULL)
            goto fail;
        reply_t reply;
        int r = answer_one(core, buf, got, host, port, v4, &reply);
        Py_DECREF(host);
        if (r < 0)
            goto fail;
        if (reply.body == NULL)
            continue;
        struct iovec iov[2];
        int parts = 0;
        if (reply.head_len) {
            iov[parts].iov_base = reply.head;
            iov[parts++].iov_len = reply.head_len;
        }
        iov[parts].iov_base = PyBytes_AS_STRING(reply.body);
        iov[parts++].iov_len = PyBytes_GET_SIZE(reply.body);
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
    if (!reply.head_len)
        return reply.body;
    Py_ssize_t body = PyBytes_GET_SIZE(reply.body);
    PyObject *whole = PyBytes_FromStringAndSize(NULL, REPLY_HEAD + body);
    if (whole != NULL) {
        memcpy(PyBytes_AS_STRING(whole), reply.head, REPLY_HEAD);
        memcpy(PyBytes_AS_STRING(whole) + REPLY_HEAD, PyBytes_AS_STRING(reply.body), body);
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
    return PyModule_Create(&module_def);
}

/*
 * krocket.broker.fastpath._cserve: the C implementation of the broker's per-read send fast path.
 *
 * One entry point, serve(buf, ctx, out) -> int, with exactly the behaviour and output bytes of the Python twin
 * (krocket/broker/fastpath/pure.py); the contract is the one in fastpath's package docstring:
 *
 *   walk the remoting frames at the front of `buf`, serve every whole SEND_MESSAGE(_V2) frame that is plainly
 *   servable (JSON header of known shape, known topic, ordinary properties, room in the log), in order: append
 *   its commit log record to ctx.log_buf, its consume queue entry to the queue's pending buffer, its index keys
 *   to ctx.index_entries and its reply frame to `out`. Stop at the first frame that is incomplete (STOP_END),
 *   that the slow path must take (STOP_SLOW) or once the log buffer reached ctx.commit_limit (STOP_COMMIT).
 *   Return the number of bytes consumed; set ctx.stop and ctx.count.
 *
 * Safety: `buf` is untrusted network input. Every read is bounds-checked against the end of the buffer (or of
 * the header / decoded string being scanned); nothing recurses; bad input never raises, it declines
 * (STOP_SLOW) and leaves that frame untouched. Python errors (MemoryError, an exception from a callback such as
 * ctx.tags_code or ConsumeQueue.write_out) are raised, after everything served so far has been written back to
 * ctx (log_wrote, log_room, rr, count, stop), and a frame is either served completely or not at all.
 *
 * No zlib link: the body CRC32 (IEEE, the same as zlib.crc32) is table driven (slice-by-8).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* ---- protocol constants (each defined once in krocket.common; mirrored here) -------------------------- */
#define STOP_END 0
#define STOP_SLOW 1
#define STOP_COMMIT 2

#define CODE_SEND_MESSAGE 10
#define CODE_SEND_MESSAGE_V2 310

#define MAGIC_V1 (-626843481)
#define RECORD_FIXED_BYTES 88
#define ENTRY_BYTES 20
#define MAX_PROPERTIES_BYTES 32767
#define SYSFLAG_MULTI_TAGS 2

#define REPLY_MAX 512 /* the reply frame: ~230 fixed bytes + 32 msgId + 4 decimal numbers of <= 20 digits */

/* ---- small helpers -------------------------------------------------------------------------------------- */
typedef struct {
    const char *p;
    Py_ssize_t n;
} span_t; /* a byte string inside buf or inside the decode arena */

static inline int span_eq(span_t a, const char *lit, Py_ssize_t n) {
    return a.n == n && memcmp(a.p, lit, (size_t)n) == 0;
}
#define SPAN_IS(s, lit) span_eq((s), (lit), (Py_ssize_t)(sizeof(lit) - 1))

static inline int32_t rd_i32(const uint8_t *p) {
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
}
static inline void wr_u16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void wr_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void wr_u64(uint8_t *p, uint64_t v) {
    wr_u32(p, (uint32_t)(v >> 32));
    wr_u32(p + 4, (uint32_t)v);
}

/* Decimal text of v into p (no NUL); returns its length (<= 20). */
static Py_ssize_t fmt_i64(char *p, int64_t v) {
    char tmp[24];
    Py_ssize_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + (u % 10));
        u /= 10;
    } while (u);
    Py_ssize_t len = 0;
    if (v < 0)
        p[len++] = '-';
    while (n)
        p[len++] = tmp[--n];
    return len;
}

/* ---- CRC32 (IEEE 802.3, reflected, the same as zlib.crc32), slice-by-8 --------------------------------- */
static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

static uint32_t crc32_ieee(const uint8_t *p, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
        uint32_t hi = (uint32_t)p[4] | ((uint32_t)p[5] << 8) | ((uint32_t)p[6] << 16) | ((uint32_t)p[7] << 24);
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF] ^
            crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
            crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n-- > 0)
        c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---- per-call scratch: the decode arena and key lists (stack first, heap when a header is large) -------- */
#define STACK_ARENA 2048
#define STACK_KEYS 64

typedef struct {
    char *arena; /* decoded strings (escapes resolved); never more bytes than the header they come from */
    Py_ssize_t arena_cap, arena_len;
    char arena_stack[STACK_ARENA];
    span_t *keys; /* keys of the object or properties being checked for duplicates */
    Py_ssize_t keys_cap, keys_len;
    span_t keys_stack[STACK_KEYS];
    uint32_t *table; /* open-addressing hash table for the duplicate check of long key lists */
    Py_ssize_t table_cap;
} scratch_t;

static void scratch_init(scratch_t *s) {
    s->arena = s->arena_stack;
    s->arena_cap = STACK_ARENA;
    s->arena_len = 0;
    s->keys = s->keys_stack;
    s->keys_cap = STACK_KEYS;
    s->keys_len = 0;
    s->table = NULL;
    s->table_cap = 0;
}

static void scratch_free(scratch_t *s) {
    if (s->arena != s->arena_stack)
        PyMem_Free(s->arena);
    if (s->keys != s->keys_stack)
        PyMem_Free(s->keys);
    PyMem_Free(s->table);
}

/* Make room for `need` decoded bytes (a header's length bounds what its strings decode to). -1: MemoryError.
 * Only called before a header is scanned, so no span points into the old arena. */
static int scratch_reserve_arena(scratch_t *s, Py_ssize_t need) {
    s->arena_len = 0;
    if (need <= s->arena_cap)
        return 0;
    char *grown = PyMem_Malloc((size_t)need);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (s->arena != s->arena_stack)
        PyMem_Free(s->arena);
    s->arena = grown;
    s->arena_cap = need;
    return 0;
}

static int scratch_push_key(scratch_t *s, span_t k) {
    if (s->keys_len == s->keys_cap) {
        Py_ssize_t cap = s->keys_cap * 2;
        span_t *grown = PyMem_Malloc((size_t)cap * sizeof(span_t));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(grown, s->keys, (size_t)s->keys_len * sizeof(span_t));
        if (s->keys != s->keys_stack)
            PyMem_Free(s->keys);
        s->keys = grown;
        s->keys_cap = cap;
    }
    s->keys[s->keys_len++] = k;
    return 0;
}

static uint32_t span_hash(span_t k) { /* FNV-1a */
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < k.n; i++)
        h = (h ^ (uint8_t)k.p[i]) * 16777619u;
    return h;
}

/* 1 when the collected keys are pairwise distinct, 0 when one repeats, -1 on MemoryError. Quadratic for the
 * usual handful of keys, a hash table for long lists (a 32 KiB properties string may hold 10k keys). */
static int scratch_keys_distinct(scratch_t *s) {
    Py_ssize_t n = s->keys_len;
    if (n <= 16) {
        for (Py_ssize_t i = 1; i < n; i++)
            for (Py_ssize_t j = 0; j < i; j++)
                if (s->keys[i].n == s->keys[j].n && memcmp(s->keys[i].p, s->keys[j].p, (size_t)s->keys[i].n) == 0)
                    return 0;
        return 1;
    }
    Py_ssize_t cap = 64;
    while (cap < 2 * n)
        cap *= 2;
    if (cap > s->table_cap) {
        uint32_t *grown = PyMem_Malloc((size_t)cap * sizeof(uint32_t));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        PyMem_Free(s->table);
        s->table = grown;
        s->table_cap = cap;
    }
    memset(s->table, 0xFF, (size_t)cap * sizeof(uint32_t)); /* 0xFFFFFFFF: empty */
    for (Py_ssize_t i = 0; i < n; i++) {
        span_t k = s->keys[i];
        Py_ssize_t at = (Py_ssize_t)(span_hash(k) & (uint32_t)(cap - 1));
        for (;;) {
            uint32_t j = s->table[at];
            if (j == 0xFFFFFFFFu) {
                s->table[at] = (uint32_t)i;
                break;
            }
            if (s->keys[j].n == k.n && memcmp(s->keys[j].p, k.p, (size_t)k.n) == 0)
                return 0;
            at = (at + 1) & (cap - 1);
        }
    }
    return 1;
}

/* ---- JSON scanning (the request header) ----------------------------------------------------------------
 * Functions return the position after what they scanned, or NULL when the input is not what the fast path
 * serves (invalid JSON, a type it does not take, ...): the frame then goes to the slow path. */

static inline const uint8_t *skip_ws(const uint8_t *p, const uint8_t *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Length of the valid UTF-8 sequence at p (p[0] >= 0x80), 0 when invalid (overlong, surrogate, > U+10FFFF,
 * truncated). */
static inline int utf8_seq(const uint8_t *p, const uint8_t *e) {
    uint8_t c = p[0];
    Py_ssize_t left = e - p;
    if (c >= 0xC2 && c <= 0xDF)
        return (left >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && p[1] < 0xA0)
            return 0; /* overlong */
        if (c == 0xED && p[1] > 0x9F)
            return 0; /* UTF-16 surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xF4 && p[1] > 0x8F)
            return 0; /* > U+10FFFF */
        return 4;
    }
    return 0;
}

static inline int hex4(const uint8_t *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            return 0;
        v = (v << 4) | d;
    }
    *out = v;
    return 1;
}

static inline int put_utf8(char *d, uint32_t cp) {
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xC0 | (cp >> 6));
        d[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xE0 | (cp >> 12));
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        d[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | (cp >> 18));
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    d[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A JSON string; p is at its opening quote. The decoded UTF-8 text goes to *out: a span of buf itself when the
 * string holds no escape, else a span of the arena. Escapes: \" \\ \/ \b \f \n \r \t \uXXXX (a surrogate pair
 * is one code point; a lone surrogate declines). Raw bytes must be valid UTF-8 and not control characters. */
static const uint8_t *scan_string(const uint8_t *p, const uint8_t *e, scratch_t *s, span_t *out) {
    p++; /* the opening quote */
    const uint8_t *start = p;
    while (p < e) {
        uint8_t c = *p;
        if (c == '"') {
            out->p = (const char *)start;
            out->n = p - start;
            return p + 1;
        }
        if (c == '\\')
            break;
        if (c < 0x20)
            return NULL;
        if (c < 0x80) {
            p++;
            continue;
        }
        int n = utf8_seq(p, e);
        if (!n)
            return NULL;
        p += n;
    }
    if (p >= e)
        return NULL; /* unterminated */
    /* An escape: copy what came before into the arena and decode the rest there. The decoded form is never
     * longer than the raw form and the arena holds at least the header's length, so this cannot overflow;
     * the check is kept anyway. */
    char *d0 = s->arena + s->arena_len;
    char *d = d0;
    char *dend = s->arena + s->arena_cap;
    if ((Py_ssize_t)(p - start) > dend - d)
        return NULL;
    memcpy(d, start, (size_t)(p - start));
    d += p - start;
    while (p < e) {
        uint8_t c = *p;
        if (c == '"') {
            out->p = d0;
            out->n = d - d0;
            s->arena_len = d - s->arena;
            return p + 1;
        }
        if (dend - d < 4)
            return NULL;
        if (c == '\\') {
            if (e - p < 2)
                return NULL;
            uint8_t x = p[1];
            p += 2;
            switch (x) {
            case '"': *d++ = '"'; break;
            case '\\': *d++ = '\\'; break;
            case '/': *d++ = '/'; break;
            case 'b': *d++ = '\b'; break;
            case 'f': *d++ = '\f'; break;
            case 'n': *d++ = '\n'; break;
            case 'r': *d++ = '\r'; break;
            case 't': *d++ = '\t'; break;
            case 'u': {
                uint32_t cp;
                if (e - p < 4 || !hex4(p, &cp))
                    return NULL;
                p += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return NULL; /* a lone low surrogate */
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                        return NULL; /* a lone high surrogate */
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                d += put_utf8(d, cp);
                break;
            }
            default:
                return NULL;
            }
            continue;
        }
        if (c < 0x20)
            return NULL;
        if (c < 0x80) {
            *d++ = (char)c;
            p++;
            continue;
        }
        int n = utf8_seq(p, e);
        if (!n)
            return NULL;
        memcpy(d, p, (size_t)n);
        d += n;
        p += n;
    }
    return NULL; /* unterminated */
}

/* A JSON integer, `-?(0|[1-9][0-9]*)` (no fraction, no exponent). *fits: within int64 (then *out is it);
 * *json_int: within what orjson reads as an integer (-2^63 .. 2^64-1; beyond, it reads a float). */
static const uint8_t *scan_int(const uint8_t *p, const uint8_t *e, int64_t *out, int *fits, int *json_int) {
    int neg = 0;
    if (p < e && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= e || *p < '0' || *p > '9')
        return NULL;
    if (*p == '0' && p + 1 < e && p[1] >= '0' && p[1] <= '9')
        return NULL; /* a leading zero is not JSON */
    uint64_t v = 0, limit = neg ? UINT64_C(9223372036854775808) : UINT64_MAX;
    int in_range = 1;
    while (p < e && *p >= '0' && *p <= '9') {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (limit - d) / 10)
            in_range = 0;
        else
            v = v * 10 + d;
        p++;
    }
    if (p < e && (*p == '.' || *p == 'e' || *p == 'E'))
        return NULL; /* a fraction or exponent: not an integer */
    *json_int = in_range;
    *fits = in_range && (neg || v <= (uint64_t)INT64_MAX);
    *out = *fits ? (neg ? (int64_t)((uint64_t)0 - v) : (int64_t)v) : 0;
    return p;
}

/* An ext field value (a string of the header) as an integer, as the twin's _int: at most 20 characters,
 * `-?[0-9]+`, within int64. 1 ok, 0 not. */
static int parse_field_int(span_t v, int64_t *out) {
    const char *p = v.p;
    Py_ssize_t n = v.n;
    if (n < 1 || n > 20)
        return 0;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
        n--;
    }
    if (n < 1)
        return 0;
    uint64_t u = 0, limit = neg ? UINT64_C(9223372036854775808) : (uint64_t)INT64_MAX;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (u > (limit - d) / 10)
            return 0; /* outside int64 */
        u = u * 10 + d;
    }
    *out = neg ? (int64_t)((uint64_t)0 - u) : (int64_t)u;
    return 1;
}

/* ---- the request header ---------------------------------------------------------------------------------- */
/* An ext field's value: a string (the usual), or a JSON integer (RocketMQ's C++ client writes some numbers
 * bare; the slow path's decoder reads them as their decimal text). */
typedef struct {
    span_t s; /* the decoded string (is_int == 0) */
    int is_int;
    int fits; /* is_int: within int64, in i */
    int64_t i;
} value_t;

enum { /* the send header's fields, in SEND_MESSAGE_V2's letter order a..n */
    F_PRODUCER_GROUP, F_TOPIC, F_DEFAULT_TOPIC, F_DEFAULT_TOPIC_QUEUE_NUMS, F_QUEUE_ID, F_SYS_FLAG,
    F_BORN_TIMESTAMP, F_FLAG, F_PROPERTIES, F_RECONSUME_TIMES, F_UNIT_MODE, F_MAX_RECONSUME_TIMES, F_BATCH,
    F_BROKER_NAME, N_FIELDS
};

/* SEND_MESSAGE's long names, by field (krocket.common.headers.send.SEND_LONG_NAMES). */
static const char *const LONG_NAMES[N_FIELDS] = {
    "producerGroup", "topic", "defaultTopic", "defaultTopicQueueNums", "queueId", "sysFlag", "bornTimestamp",
    "flag", "properties", "reconsumeTimes", "unitMode", "maxReconsumeTimes", "batch", "brokerName",
};

typedef struct {
    int64_t code, flag, opaque;
    int has_code;
    /* ext field values by field, under both name sets (which set applies is known once all keys are seen) */
    value_t v2[N_FIELDS], v1[N_FIELDS];
    uint32_t v2_has, v1_has;
} header_t;

enum { K_CODE = 1, K_EXT = 2, K_FLAG = 4, K_OPAQUE = 8, K_VERSION = 16, K_LANGUAGE = 32, K_SER = 64, K_REMARK = 128 };

static int top_key(span_t k) {
    if (SPAN_IS(k, "code")) return K_CODE;
    if (SPAN_IS(k, "extFields")) return K_EXT;
    if (SPAN_IS(k, "flag")) return K_FLAG;
    if (SPAN_IS(k, "opaque")) return K_OPAQUE;
    if (SPAN_IS(k, "version")) return K_VERSION;
    if (SPAN_IS(k, "language")) return K_LANGUAGE;
    if (SPAN_IS(k, "serializeTypeCurrentRPC")) return K_SER;
    if (SPAN_IS(k, "remark")) return K_REMARK;
    return 0;
}

static void note_ext_field(header_t *h, span_t k, value_t v) {
    if (k.n == 1 && k.p[0] >= 'a' && k.p[0] < 'a' + N_FIELDS) {
        int f = k.p[0] - 'a';
        h->v2[f] = v;
        h->v2_has |= 1u << f;
        return;
    }
    for (int f = 0; f < N_FIELDS; f++) {
        if (span_eq(k, LONG_NAMES[f], (Py_ssize_t)strlen(LONG_NAMES[f]))) {
            h->v1[f] = v;
            h->v1_has |= 1u << f;
            return;
        }
    }
}

/* The extFields object; p is at '{'. Values must be strings or integers (as orjson reads them); keys distinct. */
static const uint8_t *scan_ext_fields(const uint8_t *p, const uint8_t *e, scratch_t *s, header_t *h, int *err) {
    p = skip_ws(p + 1, e);
    s->keys_len = 0;
    if (p < e && *p == '}')
        return p + 1;
    for (;;) {
        span_t k;
        value_t v = {{"", 0}, 0, 0, 0};
        if (p >= e || *p != '"' || (p = scan_string(p, e, s, &k)) == NULL)
            return NULL;
        p = skip_ws(p, e);
        if (p >= e || *p != ':')
            return NULL;
        p = skip_ws(p + 1, e);
        if (p >= e)
            return NULL;
        if (*p == '"') {
            if ((p = scan_string(p, e, s, &v.s)) == NULL)
                return NULL;
        } else {
            int json_int;
            if ((p = scan_int(p, e, &v.i, &v.fits, &json_int)) == NULL || !json_int)
                return NULL; /* null, true, a float, an object...: the decoder's to convert or drop */
            v.is_int = 1;
        }
        if (scratch_push_key(s, k) < 0) {
            *err = 1;
            return NULL;
        }
        note_ext_field(h, k, v);
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}')
            break;
        return NULL;
    }
    int distinct = scratch_keys_distinct(s);
    if (distinct < 0)
        *err = 1;
    return distinct == 1 ? p + 1 : NULL;
}

/* The whole header [p, e): 1 when it is a servable send header, 0 when not, -1 on a Python error. */
static int parse_header(const uint8_t *p, const uint8_t *e, scratch_t *s, header_t *h) {
    unsigned seen = 0;
    int err = 0;
    memset(h, 0, sizeof(*h));
    p = skip_ws(p, e);
    if (p >= e || *p != '{')
        return 0;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return 0; /* no code */
    for (;;) {
        span_t k;
        if (p >= e || *p != '"' || (p = scan_string(p, e, s, &k)) == NULL)
            return 0;
        int which = top_key(k);
        if (!which || (seen & (unsigned)which))
            return 0; /* an unknown key, or one twice */
        seen |= (unsigned)which;
        p = skip_ws(p, e);
        if (p >= e || *p != ':')
            return 0;
        p = skip_ws(p + 1, e);
        if (p >= e)
            return 0;
        int64_t num = 0;
        int fits = 0, json_int = 0;
        span_t text;
        switch (which) {
        case K_CODE:
        case K_FLAG:
        case K_OPAQUE:
        case K_VERSION:
            if ((p = scan_int(p, e, &num, &fits, &json_int)) == NULL || !fits)
                return 0;
            if ((which == K_OPAQUE || which == K_VERSION) && (num < INT32_MIN || num > INT32_MAX))
                return 0;
            if (which == K_CODE) {
                h->code = num;
                h->has_code = 1;
            } else if (which == K_FLAG) {
                h->flag = num;
            } else if (which == K_OPAQUE) {
                h->opaque = num;
            }
            break;
        case K_EXT:
            if (*p != '{' || (p = scan_ext_fields(p, e, s, h, &err)) == NULL)
                return err ? -1 : 0;
            break;
        case K_REMARK:
            if (e - p >= 4 && memcmp(p, "null", 4) == 0) {
                p += 4;
                break;
            }
            /* else a string, as below */
            /* fall through */
        default: /* K_LANGUAGE, K_SER, K_REMARK */
            if (*p != '"' || (p = scan_string(p, e, s, &text)) == NULL)
                return 0;
            break;
        }
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}')
            break;
        return 0;
    }
    p = skip_ws(p + 1, e);
    if (p != e)
        return 0; /* something after the object */
    if (!h->has_code || !(seen & K_EXT))
        return 0;
    return 1;
}

/* ---- interned attribute names ---------------------------------------------------------------------------- */
static PyObject *s_max_frame, *s_max_body, *s_log_buf, *s_log_wrote, *s_log_room, *s_roll_at, *s_commit_limit,
    *s_now, *s_born_host, *s_store_host, *s_msg_id_prefix_bytes, *s_version, *s_rr, *s_topics, *s_slow_keys,
    *s_tags_code, *s_index_enabled, *s_index_entries, *s_touched, *s_count, *s_stop, *s_topic, *s_prefix,
    *s_write_queues, *s_queues, *s_max_offset, *s_pending, *s_pending_limit, *s_write_out, *s_missing_topic,
    *s_make_queue;

static int intern_names(void) {
#define INTERN(var, text)                                  \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return -1;
    INTERN(s_max_frame, "max_frame")
    INTERN(s_max_body, "max_body")
    INTERN(s_log_buf, "log_buf")
    INTERN(s_log_wrote, "log_wrote")
    INTERN(s_log_room, "log_room")
    INTERN(s_roll_at, "roll_at")
    INTERN(s_commit_limit, "commit_limit")
    INTERN(s_now, "now")
    INTERN(s_born_host, "born_host")
    INTERN(s_store_host, "store_host")
    INTERN(s_msg_id_prefix_bytes, "msg_id_prefix_bytes")
    INTERN(s_version, "version")
    INTERN(s_rr, "rr")
    INTERN(s_topics, "topics")
    INTERN(s_slow_keys, "slow_keys")
    INTERN(s_tags_code, "tags_code")
    INTERN(s_index_enabled, "index_enabled")
    INTERN(s_index_entries, "index_entries")
    INTERN(s_touched, "touched")
    INTERN(s_count, "count")
    INTERN(s_stop, "stop")
    INTERN(s_topic, "topic")
    INTERN(s_prefix, "prefix")
    INTERN(s_write_queues, "write_queues")
    INTERN(s_queues, "queues")
    INTERN(s_max_offset, "max_offset")
    INTERN(s_pending, "_pending")
    INTERN(s_pending_limit, "pending_limit")
    INTERN(s_write_out, "write_out")
    INTERN(s_missing_topic, "missing_topic")
    INTERN(s_make_queue, "make_queue")
#undef INTERN
    return 0;
}

/* ---- the context, read once per call --------------------------------------------------------------------- */
#define STACK_SLOW_KEYS 32

typedef struct {
    PyObject *ctx; /* borrowed: the caller's argument */
    /* owned references */
    PyObject *log_buf, *topics, *slow_keys, *tags_code, *index_entries, *touched;
    PyObject *born_host, *store_host, *msg_id_prefix;
    /* plain values */
    int64_t max_frame, max_body, log_wrote, log_room, commit_limit, now, version, rr;
    int roll_never; /* roll_at is +inf (or beyond int64) */
    int roll_now;   /* roll_at is -inf (every send rolls) */
    double roll_at_f;
    int roll_is_float;
    int64_t roll_at;
    int index_enabled;
    /* ctx.slow_keys as UTF-8 (pointers into the str objects the frozenset holds) */
    span_t *slow, slow_stack[STACK_SLOW_KEYS];
    Py_ssize_t n_slow;
} ctx_t;

static void ctx_release(ctx_t *c) {
    Py_CLEAR(c->log_buf);
    Py_CLEAR(c->topics);
    Py_CLEAR(c->slow_keys);
    Py_CLEAR(c->tags_code);
    Py_CLEAR(c->index_entries);
    Py_CLEAR(c->touched);
    Py_CLEAR(c->born_host);
    Py_CLEAR(c->store_host);
    Py_CLEAR(c->msg_id_prefix);
    if (c->slow != c->slow_stack)
        PyMem_Free(c->slow);
    c->slow = c->slow_stack;
}

static int get_i64(PyObject *obj, PyObject *name, int64_t *out) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    int overflow = 0; /* AndOverflow: CPython 3.11's plain AsLongLong goes through a byte array for big ints */
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (overflow) {
        PyErr_Format(PyExc_OverflowError, "%U does not fit in 64 bits", name);
        return -1;
    }
    *out = (int64_t)x;
    return 0;
}

static PyObject *get_typed(PyObject *obj, PyObject *name, PyTypeObject *type) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v != NULL && !PyObject_TypeCheck(v, type)) {
        PyErr_Format(PyExc_TypeError, "ctx.%U must be %s, not %.100s", name, type->tp_name, Py_TYPE(v)->tp_name);
        Py_CLEAR(v);
    }
    return v;
}

static int ctx_read(ctx_t *c, PyObject *ctx) {
    memset(c, 0, sizeof(*c));
    c->ctx = ctx;
    c->slow = c->slow_stack;
    if (get_i64(ctx, s_max_frame, &c->max_frame) < 0 || get_i64(ctx, s_max_body, &c->max_body) < 0 ||
        get_i64(ctx, s_log_wrote, &c->log_wrote) < 0 || get_i64(ctx, s_log_room, &c->log_room) < 0 ||
        get_i64(ctx, s_commit_limit, &c->commit_limit) < 0 || get_i64(ctx, s_now, &c->now) < 0 ||
        get_i64(ctx, s_version, &c->version) < 0 || get_i64(ctx, s_rr, &c->rr) < 0)
        return -1;
    PyObject *roll = PyObject_GetAttr(ctx, s_roll_at);
    if (roll == NULL)
        return -1;
    if (PyFloat_Check(roll)) {
        c->roll_is_float = 1;
        c->roll_at_f = PyFloat_AS_DOUBLE(roll);
    } else {
        int overflow = 0;
        long long r = PyLong_AsLongLongAndOverflow(roll, &overflow);
        if (r == -1 && PyErr_Occurred()) {
            Py_DECREF(roll);
            return -1;
        }
        c->roll_never = overflow > 0;
        c->roll_now = overflow < 0;
        c->roll_at = (int64_t)r;
    }
    Py_DECREF(roll);
    PyObject *flag = PyObject_GetAttr(ctx, s_index_enabled);
    if (flag == NULL)
        return -1;
    c->index_enabled = PyObject_IsTrue(flag);
    Py_DECREF(flag);
    if (c->index_enabled < 0)
        return -1;
    if ((c->log_buf = get_typed(ctx, s_log_buf, &PyByteArray_Type)) == NULL ||
        (c->topics = get_typed(ctx, s_topics, &PyDict_Type)) == NULL ||
        (c->index_entries = get_typed(ctx, s_index_entries, &PyList_Type)) == NULL ||
        (c->touched = get_typed(ctx, s_touched, &PyList_Type)) == NULL ||
        (c->born_host = get_typed(ctx, s_born_host, &PyBytes_Type)) == NULL ||
        (c->store_host = get_typed(ctx, s_store_host, &PyBytes_Type)) == NULL ||
        (c->msg_id_prefix = get_typed(ctx, s_msg_id_prefix_bytes, &PyBytes_Type)) == NULL ||
        (c->tags_code = PyObject_GetAttr(ctx, s_tags_code)) == NULL ||
        (c->slow_keys = PyObject_GetAttr(ctx, s_slow_keys)) == NULL)
        return -1;
    if (PyBytes_GET_SIZE(c->born_host) != 8 || PyBytes_GET_SIZE(c->store_host) != 8 ||
        PyBytes_GET_SIZE(c->msg_id_prefix) != 16) {
        PyErr_SetString(PyExc_ValueError, "ctx.born_host/store_host must be 8 bytes, msg_id_prefix_bytes 16");
        return -1;
    }
    if (!PyAnySet_Check(c->slow_keys)) {
        PyErr_SetString(PyExc_TypeError, "ctx.slow_keys must be a frozenset of str");
        return -1;
    }
    Py_ssize_t n = PySet_GET_SIZE(c->slow_keys);
    if (n > STACK_SLOW_KEYS) {
        c->slow = PyMem_Malloc((size_t)n * sizeof(span_t));
        if (c->slow == NULL) {
            c->slow = c->slow_stack;
            PyErr_NoMemory();
            return -1;
        }
    }
    /* The UTF-8 of each key stays valid while the set (held until the end of the call) holds the str. */
    PyObject *it = PyObject_GetIter(c->slow_keys), *key;
    if (it == NULL)
        return -1;
    while ((key = PyIter_Next(it)) != NULL) {
        if (PyUnicode_Check(key) && c->n_slow < n) {
            Py_ssize_t len;
            const char *utf8 = PyUnicode_AsUTF8AndSize(key, &len);
            if (utf8 == NULL) { /* a lone surrogate: no valid UTF-8 key can equal it */
                PyErr_Clear();
            } else {
                c->slow[c->n_slow].p = utf8;
                c->slow[c->n_slow].n = len;
                c->n_slow++;
            }
        }
        Py_DECREF(key);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static int is_slow_key(const ctx_t *c, span_t k) {
    for (Py_ssize_t i = 0; i < c->n_slow; i++)
        if (c->slow[i].n == k.n && memcmp(c->slow[i].p, k.p, (size_t)k.n) == 0)
            return 1;
    return 0;
}

/* Write what this call served back to ctx; keeps an exception that is already set. */
static int ctx_write_back(PyObject *ctx, const ctx_t *c, Py_ssize_t count, int stop) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int rc = 0;
    struct {
        PyObject *name;
        int64_t v;
    } fields[] = {
        {s_log_wrote, c->log_wrote}, {s_log_room, c->log_room}, {s_rr, c->rr}, {s_count, count}, {s_stop, stop},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        PyObject *v = PyLong_FromLongLong(fields[i].v);
        if (v == NULL || PyObject_SetAttr(ctx, fields[i].name, v) < 0)
            rc = -1;
        Py_XDECREF(v);
        if (rc < 0)
            break;
    }
    if (type != NULL) {
        if (rc < 0)
            PyErr_Clear();
        PyErr_Restore(type, value, tb);
        return -1;
    }
    return rc;
}

/* ---- the topic cache: the last topic looked up in this call, with its entry's fields ---------------------- */
typedef struct {
    PyObject *key;    /* bytes, owned */
    PyObject *entry;  /* the TopicEntry, owned */
    PyObject *queues; /* entry.queues (list), owned */
    PyObject *prefix; /* entry.prefix (bytes), owned */
    PyObject *topic;  /* entry.topic (str), owned */
    const char *topic_utf8;
    Py_ssize_t topic_len;
    int64_t write_queues;
} topic_t;

static void topic_clear(topic_t *t) {
    Py_CLEAR(t->key);
    Py_CLEAR(t->entry);
    Py_CLEAR(t->queues);
    Py_CLEAR(t->prefix);
    Py_CLEAR(t->topic);
}

/* Look the topic up (cached): 1 found, 0 not a known topic (or an entry of a shape we do not serve), -1 error. */
static int topic_lookup(topic_t *t, const ctx_t *c, span_t name) {
    if (t->key != NULL && PyBytes_GET_SIZE(t->key) == name.n &&
        memcmp(PyBytes_AS_STRING(t->key), name.p, (size_t)name.n) == 0)
        return 1;
    topic_clear(t);
    PyObject *key = PyBytes_FromStringAndSize(name.p, name.n);
    if (key == NULL)
        return -1;
    PyObject *entry = PyDict_GetItemWithError(c->topics, key); /* borrowed */
    if (entry == NULL) {
        Py_DECREF(key);
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(entry);
    PyObject *queues = PyObject_GetAttr(entry, s_queues);
    PyObject *prefix = queues ? PyObject_GetAttr(entry, s_prefix) : NULL;
    PyObject *topic = prefix ? PyObject_GetAttr(entry, s_topic) : NULL;
    PyObject *wq = topic ? PyObject_GetAttr(entry, s_write_queues) : NULL;
    long long write_queues = wq ? PyLong_AsLongLong(wq) : -1;
    Py_XDECREF(wq);
    if (wq == NULL || (write_queues == -1 && PyErr_Occurred()) || !PyList_Check(queues) ||
        !PyBytes_Check(prefix) || !PyUnicode_Check(topic) || PyBytes_GET_SIZE(prefix) < 2) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "a TopicEntry needs queues: list, prefix: bytes, topic: str");
        Py_DECREF(key);
        Py_DECREF(entry);
        Py_XDECREF(queues);
        Py_XDECREF(prefix);
        Py_XDECREF(topic);
        return -1;
    }
    t->topic_utf8 = PyUnicode_AsUTF8AndSize(topic, &t->topic_len);
    if (t->topic_utf8 == NULL) {
        Py_DECREF(key);
        Py_DECREF(entry);
        Py_DECREF(queues);
        Py_DECREF(prefix);
        Py_DECREF(topic);
        return -1;
    }
    t->key = key;
    t->entry = entry;
    t->queues = queues;
    t->prefix = prefix;
    t->topic = topic;
    t->write_queues = write_queues;
    return 1;
}

/* ---- one send ---------------------------------------------------------------------------------------------- */
typedef struct {
    int queue_id;
    int32_t flag, reconsume_times, sys_flag;
    int64_t born_timestamp;
    span_t body, props;
    span_t tags;
    int has_tags;
    span_t keys, uniq;
} send_t;

/* The properties: empty, or `key\x01value\x02` items (each with exactly one \x01, a non-empty key, keys
 * distinct). Picks TAGS, KEYS, UNIQ_KEY. 1 servable, 0 not, -1 error. */
static int check_properties(const ctx_t *c, scratch_t *s, send_t *m) {
    span_t P = m->props;
    m->has_tags = 0;
    m->tags.p = P.p;
    m->tags.n = 0;
    m->keys.n = m->uniq.n = 0;
    m->keys.p = m->uniq.p = P.p;
    if (P.n == 0)
        return 1;
    if (P.n > MAX_PROPERTIES_BYTES || P.p[P.n - 1] != '\x02')
        return 0;
    s->keys_len = 0;
    const char *p = P.p, *end = P.p + P.n;
    while (p < end) {
        const char *item_end = memchr(p, '\x02', (size_t)(end - p)); /* found: P ends with \x02 */
        const char *sep = memchr(p, '\x01', (size_t)(item_end - p));
        if (sep == NULL || sep == p)
            return 0; /* no \x01 (an empty item too), or an empty key */
        if (memchr(sep + 1, '\x01', (size_t)(item_end - sep - 1)) != NULL)
            return 0; /* two \x01 */
        span_t key = {p, sep - p}, value = {sep + 1, item_end - sep - 1};
        if (is_slow_key(c, key))
            return 0;
        if (scratch_push_key(s, key) < 0)
            return -1;
        if (SPAN_IS(key, "TAGS")) {
            m->tags = value;
            m->has_tags = 1;
        } else if (SPAN_IS(key, "KEYS")) {
            m->keys = value;
        } else if (SPAN_IS(key, "UNIQ_KEY")) {
            m->uniq = value;
        }
        p = item_end + 1;
    }
    return scratch_keys_distinct(s);
}

/* The ext field values under the name set SendMessageHeader.from_fields decodes with: the one-letter names when
 * "b" is there and "topic" is not (whatever the request code), else the long names. Sets *has. */
static const value_t *field_set(const header_t *h, uint32_t *has) {
    if ((h->v2_has & (1u << F_TOPIC)) && !(h->v1_has & (1u << F_TOPIC))) {
        *has = h->v2_has;
        return h->v2;
    }
    *has = h->v1_has;
    return h->v1;
}

/* An integer ext field as the slow path reads it: empty or absent -> the default; a string `-?[0-9]+` of at
 * most 20 characters or a JSON integer, within int64. 1 ok, 0 not. */
static int field_int(const value_t *v, int has, int64_t deflt, int64_t *out) {
    if (!has) {
        *out = deflt;
        return 1;
    }
    if (v->is_int) {
        *out = v->i;
        return v->fits;
    }
    if (v->s.n == 0) {
        *out = deflt;
        return 1;
    }
    return parse_field_int(v->s, out);
}

/* The ext fields other than the topic. 1 servable (m filled), 0 not. */
static int check_fields(const value_t *v, uint32_t has, send_t *m) {
#define HAS(f) ((int)((has >> (f)) & 1u))
    int64_t queue_id, sys_flag, born, flag, reconsume, ignored;
    if (!field_int(&v[F_QUEUE_ID], HAS(F_QUEUE_ID), -1, &queue_id) ||
        !field_int(&v[F_BORN_TIMESTAMP], HAS(F_BORN_TIMESTAMP), 0, &born) ||
        !field_int(&v[F_SYS_FLAG], HAS(F_SYS_FLAG), 0, &sys_flag) ||
        !field_int(&v[F_FLAG], HAS(F_FLAG), 0, &flag) ||
        !field_int(&v[F_RECONSUME_TIMES], HAS(F_RECONSUME_TIMES), 0, &reconsume) ||
        !field_int(&v[F_DEFAULT_TOPIC_QUEUE_NUMS], HAS(F_DEFAULT_TOPIC_QUEUE_NUMS), 0, &ignored) ||
        !field_int(&v[F_MAX_RECONSUME_TIMES], HAS(F_MAX_RECONSUME_TIMES), 0, &ignored))
        return 0;
    if (HAS(F_PROPERTIES) && v[F_PROPERTIES].is_int)
        return 0;
    if (HAS(F_BATCH) && (v[F_BATCH].is_int || !(v[F_BATCH].s.n == 0 || SPAN_IS(v[F_BATCH].s, "false") ||
                                               SPAN_IS(v[F_BATCH].s, "0"))))
        return 0; /* a batch, or a value the slow path may read as one */
    if (sys_flag != 0 && sys_flag != SYSFLAG_MULTI_TAGS)
        return 0;
    if (flag < INT32_MIN || flag > INT32_MAX || reconsume < INT32_MIN || reconsume > INT32_MAX)
        return 0;
    if (queue_id > INT32_MAX)
        return 0; /* beyond any topic's queues */
    m->queue_id = queue_id < 0 ? -1 : (int)queue_id; /* negative: round robin (as BrokerService.send) */
    m->sys_flag = (int32_t)sys_flag;
    m->born_timestamp = born;
    m->flag = (int32_t)flag;
    m->reconsume_times = (int32_t)reconsume;
    m->props = HAS(F_PROPERTIES) ? v[F_PROPERTIES].s : (span_t){"", 0};
#undef HAS
    return 1;
}

/* Java's String.hashCode of ASCII text (RocketMQ's tags code); -1 in *ascii when the text is not ASCII. */
static int32_t java_hash_ascii(span_t t, int *ascii) {
    uint32_t h = 0;
    *ascii = 1;
    for (Py_ssize_t i = 0; i < t.n; i++) {
        uint8_t ch = (uint8_t)t.p[i];
        if (ch >= 0x80) {
            *ascii = 0;
            return 0;
        }
        h = 31u * h + ch;
    }
    return (int32_t)h;
}

/* Shrink a bytearray back to `len` (undoing an append of this frame; a shrink does not fail). */
static void bytearray_truncate(PyObject *ba, Py_ssize_t len) {
    if (PyByteArray_GET_SIZE(ba) > len && PyByteArray_Resize(ba, len) < 0)
        PyErr_Clear();
}

/* Put a queue's max_offset back (undoing this frame); keeps the exception that made us undo. */
static void restore_offset(PyObject *queue, int64_t qoff) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *v = PyLong_FromLongLong(qoff);
    if (v == NULL || PyObject_SetAttr(queue, s_max_offset, v) < 0)
        PyErr_Clear();
    Py_XDECREF(v);
    PyErr_Restore(type, value, tb);
}

/* Append one index entry (topic + "#" + key, phy) to ctx.index_entries. */
static int append_index_entry(const ctx_t *c, const topic_t *t, span_t key, PyObject *phy) {
    char stack[512];
    Py_ssize_t n = t->topic_len + 1 + key.n;
    char *b = n <= (Py_ssize_t)sizeof(stack) ? stack : PyMem_Malloc((size_t)n);
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(b, t->topic_utf8, (size_t)t->topic_len);
    b[t->topic_len] = '#';
    memcpy(b + t->topic_len + 1, key.p, (size_t)key.n);
    PyObject *text = PyUnicode_DecodeUTF8(b, n, "strict");
    if (b != stack)
        PyMem_Free(b);
    if (text == NULL)
        return -1;
    PyObject *pair = PyTuple_Pack(2, text, phy);
    Py_DECREF(text);
    if (pair == NULL)
        return -1;
    int rc = PyList_Append(c->index_entries, pair);
    Py_DECREF(pair);
    return rc;
}

static int append_index_entries(const ctx_t *c, const topic_t *t, const send_t *m, int64_t phy) {
    PyObject *phy_obj = PyLong_FromLongLong(phy);
    if (phy_obj == NULL)
        return -1;
    int rc = 0;
    const char *p = m->keys.p, *end = m->keys.p + m->keys.n;
    while (rc == 0 && p < end) { /* each non-empty word of KEYS, split on " " */
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *word_end = sp ? sp : end;
        if (word_end > p)
            rc = append_index_entry(c, t, (span_t){p, word_end - p}, phy_obj);
        p = word_end + 1;
    }
    if (rc == 0 && m->uniq.n > 0)
        rc = append_index_entry(c, t, m->uniq, phy_obj);
    Py_DECREF(phy_obj);
    return rc;
}

/* The reply frame (no body) into r; returns its length. */
static Py_ssize_t build_reply(uint8_t *r, const ctx_t *c, int64_t phy, int queue_id, int64_t qoff, int64_t opaque) {
    static const char HEX[] = "0123456789ABCDEF";
    char *h = (char *)r + 8, *p = h;
#define LIT(text)                             \
    do {                                      \
        memcpy(p, text, sizeof(text) - 1);    \
        p += sizeof(text) - 1;                \
    } while (0)
    LIT("{\"code\":0,\"extFields\":{\"msgId\":\"");
    memcpy(p, PyBytes_AS_STRING(c->msg_id_prefix), 16);
    p += 16;
    for (int i = 15; i >= 0; i--)
        *p++ = HEX[((uint64_t)phy >> (4 * i)) & 0xF];
    LIT("\",\"queueId\":\"");
    p += fmt_i64(p, queue_id);
    LIT("\",\"queueOffset\":\"");
    p += fmt_i64(p, qoff);
    LIT("\",\"MSG_REGION\":\"DefaultRegion\",\"TRACE_ON\":\"true\"},\"flag\":1,\"language\":\"JAVA\",\"opaque\":");
    p += fmt_i64(p, opaque);
    LIT(",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":");
    p += fmt_i64(p, c->version);
    LIT("}");
#undef LIT
    uint32_t header_len = (uint32_t)(p - h);
    wr_u32(r, 4 + header_len);
    wr_u32(r + 4, header_len); /* serialize type JSON (0) << 24 | header length */
    return 8 + (Py_ssize_t)header_len;
}

/* Append the V1 commit log record to the log buffer at `at` (the room is already there). */
static void write_record(uint8_t *at, int64_t total, const send_t *m, int queue_id, int64_t qoff, int64_t phy,
                         int64_t born, const ctx_t *c, const topic_t *t) {
    wr_u32(at + 0, (uint32_t)total);
    wr_u32(at + 4, (uint32_t)MAGIC_V1);
    wr_u32(at + 8, crc32_ieee((const uint8_t *)m->body.p, m->body.n) & 0x7FFFFFFFu);
    wr_u32(at + 12, (uint32_t)queue_id);
    wr_u32(at + 16, (uint32_t)m->flag);
    wr_u64(at + 20, (uint64_t)qoff);
    wr_u64(at + 28, (uint64_t)phy);
    wr_u32(at + 36, (uint32_t)m->sys_flag);
    wr_u64(at + 40, (uint64_t)born);
    memcpy(at + 48, PyBytes_AS_STRING(c->born_host), 8);
    wr_u64(at + 56, (uint64_t)c->now);
    memcpy(at + 64, PyBytes_AS_STRING(c->store_host), 8);
    wr_u32(at + 72, (uint32_t)m->reconsume_times);
    wr_u64(at + 76, 0); /* prepared transaction offset */
    wr_u32(at + 84, (uint32_t)m->body.n);
    uint8_t *p = at + RECORD_FIXED_BYTES;
    memcpy(p, m->body.p, (size_t)m->body.n);
    p += m->body.n;
    Py_ssize_t prefix_len = PyBytes_GET_SIZE(t->prefix);
    memcpy(p, PyBytes_AS_STRING(t->prefix), (size_t)prefix_len);
    p += prefix_len;
    wr_u16(p, (uint32_t)m->props.n);
    memcpy(p + 2, m->props.p, (size_t)m->props.n);
}

typedef enum { SERVED, DECLINED, FAILED } outcome_t;

/* Serve the whole frame [f, f + frame_len) (its length and type already checked), or decline it untouched. */
static outcome_t serve_frame(const uint8_t *f, Py_ssize_t frame_len, ctx_t *c, scratch_t *s, topic_t *t,
                             PyObject *out, PyObject **last_touched, int *queue_full_out, PyObject **queue_out) {
    Py_ssize_t header_len = (Py_ssize_t)(rd_i32(f + 4) & 0xFFFFFF);
    const uint8_t *header = f + 8, *header_end = header + header_len;
    header_t h;
    send_t m;
    span_t topic_name;
    *queue_out = NULL;

    /* 1-2. the header */
    if (scratch_reserve_arena(s, header_len + 8) < 0) /* decoded strings never outgrow their header */
        return FAILED;
    int rc = parse_header(header, header_end, s, &h);
    if (rc <= 0)
        return rc < 0 ? FAILED : DECLINED;
    if ((h.code != CODE_SEND_MESSAGE_V2 && h.code != CODE_SEND_MESSAGE) || h.flag != 0)
        return DECLINED;
    /* 3. the topic, then the other ext fields */
    uint32_t has;
    const value_t *fields = field_set(&h, &has);
    if (!(has & (1u << F_TOPIC)) || fields[F_TOPIC].is_int)
        return DECLINED;
    topic_name = fields[F_TOPIC].s;
    rc = topic_lookup(t, c, topic_name);
    if (rc < 0)
        return FAILED;
    if (rc == 0) { /* tell the glue, which may add an entry for it and call again */
        PyObject *name = PyBytes_FromStringAndSize(topic_name.p, topic_name.n);
        rc = name ? PyObject_SetAttr(c->ctx, s_missing_topic, name) : -1;
        Py_XDECREF(name);
        return rc < 0 ? FAILED : DECLINED;
    }
    if (!check_fields(fields, has, &m))
        return DECLINED;
    Py_ssize_t n_queues = PyList_GET_SIZE(t->queues);
    int64_t rr = c->rr;
    int queue_id = m.queue_id;
    if (queue_id < 0) {
        int64_t n = t->write_queues > 1 ? t->write_queues : 1;
        rr = (int64_t)((uint64_t)rr + 1); /* no signed overflow (UB) at 2^63 */
        int64_t r = rr % n;
        queue_id = (int)(r < 0 ? r + n : r);
    }
    if (queue_id < 0 || queue_id >= n_queues)
        return DECLINED;
    /* 4. properties */
    rc = check_properties(c, s, &m);
    if (rc <= 0)
        return rc < 0 ? FAILED : DECLINED;
    /* 5. body */
    m.body.p = (const char *)header_end;
    m.body.n = frame_len - 8 - header_len;
    if (m.body.n < 1 || m.body.n > c->max_body)
        return DECLINED;
    /* 6. room in the segment */
    int64_t total = RECORD_FIXED_BYTES + m.body.n + PyBytes_GET_SIZE(t->prefix) + 2 + m.props.n;
    if (total > INT32_MAX || total + 8 > c->log_room)
        return DECLINED;
    if (c->roll_now || (!c->roll_never && (c->roll_is_float ? !((double)c->now < c->roll_at_f) : !(c->now < c->roll_at))))
        return DECLINED;

    /* Served. Everything that may call Python or fail comes first; then the appends, undone on failure. */
    PyObject *queue = PyList_GET_ITEM(t->queues, queue_id);
    PyObject *pending = NULL, *next_offset = NULL;
    if (queue == Py_None) { /* its first message: the entry creates the queue (as today's path does) */
        PyObject *qid = PyLong_FromLong(queue_id);
        queue = qid ? PyObject_CallMethodOneArg(t->entry, s_make_queue, qid) : NULL;
        Py_XDECREF(qid);
        if (queue == NULL)
            return FAILED;
    } else {
        Py_INCREF(queue);
    }
    int64_t qoff, pending_limit;
    int32_t tags_code = 0;
    if (get_i64(queue, s_max_offset, &qoff) < 0 || get_i64(queue, s_pending_limit, &pending_limit) < 0 ||
        (pending = get_typed(queue, s_pending, &PyByteArray_Type)) == NULL ||
        (next_offset = PyLong_FromLongLong(qoff + 1)) == NULL)
        goto fail;
    if (m.has_tags && m.tags.n > 0) {
        int ascii;
        tags_code = java_hash_ascii(m.tags, &ascii);
        if (!ascii) {
            PyObject *tags = PyUnicode_DecodeUTF8(m.tags.p, m.tags.n, "strict");
            PyObject *code = tags ? PyObject_CallOneArg(c->tags_code, tags) : NULL;
            Py_XDECREF(tags);
            if (code == NULL)
                goto fail;
            long v = PyLong_AsLong(code);
            Py_DECREF(code);
            if (v == -1 && PyErr_Occurred())
                goto fail;
            tags_code = (int32_t)v;
        }
    }
    int64_t phy = c->log_wrote;
    int64_t born = m.born_timestamp == 0 ? c->now : m.born_timestamp;
    uint8_t reply[REPLY_MAX];
    Py_ssize_t reply_len = build_reply(reply, c, phy, queue_id, qoff, h.opaque);

    Py_ssize_t log_len = PyByteArray_GET_SIZE(c->log_buf), out_len = PyByteArray_GET_SIZE(out);
    Py_ssize_t pending_len = PyByteArray_GET_SIZE(pending), index_len = PyList_GET_SIZE(c->index_entries);
    if (PyByteArray_Resize(c->log_buf, log_len + (Py_ssize_t)total) < 0)
        goto fail;
    write_record((uint8_t *)PyByteArray_AS_STRING(c->log_buf) + log_len, total, &m, queue_id, qoff, phy, born, c, t);
    if (PyByteArray_Resize(out, out_len + reply_len) < 0)
        goto undo;
    memcpy(PyByteArray_AS_STRING(out) + out_len, reply, (size_t)reply_len);
    if (PyByteArray_Resize(pending, pending_len + ENTRY_BYTES) < 0)
        goto undo;
    uint8_t *entry = (uint8_t *)PyByteArray_AS_STRING(pending) + pending_len;
    wr_u64(entry, (uint64_t)phy);
    wr_u32(entry + 8, (uint32_t)total);
    wr_u64(entry + 12, (uint64_t)(int64_t)tags_code);
    if (PyObject_SetAttr(queue, s_max_offset, next_offset) < 0)
        goto undo;
    if (c->index_enabled && append_index_entries(c, t, &m, phy) < 0)
        goto undo_offset;
    if (queue != *last_touched) {
        if (PyList_Append(c->touched, queue) < 0)
            goto undo_offset;
        *last_touched = queue; /* borrowed: the touched list holds it */
    }
    /* committed */
    c->log_wrote += total;
    c->log_room -= total;
    c->rr = rr;
    *queue_full_out = (int64_t)PyByteArray_GET_SIZE(pending) >= pending_limit;
    *queue_out = queue; /* the caller calls write_out when full, then releases it */
    Py_DECREF(pending);
    Py_DECREF(next_offset);
    return SERVED;

undo_offset:
    restore_offset(queue, qoff);
undo:
    bytearray_truncate(c->log_buf, log_len);
    bytearray_truncate(out, out_len);
    bytearray_truncate(pending, pending_len);
    if (PyList_GET_SIZE(c->index_entries) > index_len &&
        PyList_SetSlice(c->index_entries, index_len, PyList_GET_SIZE(c->index_entries), NULL) < 0)
        PyErr_Clear(); /* never: deleting a slice does not allocate */
fail:
    Py_DECREF(queue);
    Py_XDECREF(pending);
    Py_XDECREF(next_offset);
    return FAILED;
}

/* ---- serve(buf, ctx, out) -------------------------------------------------------------------------------- */
PyDoc_STRVAR(serve_doc,
             "serve(buf, ctx, out) -> int\n\n"
             "Serve the whole SEND_MESSAGE(_V2) frames at the front of buf (see krocket.broker.fastpath); returns the\n"
             "bytes consumed and sets ctx.stop and ctx.count.");

static PyObject *serve(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "serve() takes 3 arguments (buf, ctx, out), %zd given", nargs);
        return NULL;
    }
    PyObject *ctx = args[1], *out = args[2];
    if (!PyByteArray_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "serve(): out must be a bytearray");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    ctx_t c;
    if (ctx_read(&c, ctx) < 0) {
        ctx_release(&c);
        PyBuffer_Release(&view);
        return NULL;
    }
    scratch_t s;
    scratch_init(&s);
    topic_t t = {0};
    PyObject *last_touched = NULL;
    const uint8_t *base = view.buf;
    Py_ssize_t size = view.len, pos = 0, count = 0;
    int stop = STOP_END, failed = 0;

    while (pos < size) {
        Py_ssize_t left = size - pos;
        if (left < 4)
            break; /* STOP_END: not even a length */
        int64_t length = rd_i32(base + pos);
        if (length < 4 || length > c.max_frame) {
            stop = STOP_SLOW;
            break;
        }
        if (left - 4 < length)
            break; /* STOP_END: an incomplete frame */
        const uint8_t *f = base + pos;
        uint32_t type_len = (uint32_t)rd_i32(f + 4);
        if ((type_len >> 24) != 0 || (int64_t)(type_len & 0xFFFFFF) > length - 4) {
            stop = STOP_SLOW;
            break;
        }
        int queue_full = 0;
        PyObject *queue = NULL;
        outcome_t o = serve_frame(f, (Py_ssize_t)(4 + length), &c, &s, &t, out, &last_touched, &queue_full, &queue);
        if (o == FAILED) {
            failed = 1;
            stop = STOP_SLOW;
            break;
        }
        if (o == DECLINED) {
            stop = STOP_SLOW;
            break;
        }
        pos += 4 + (Py_ssize_t)length;
        count++;
        if (queue_full) {
            PyObject *r = PyObject_CallMethodNoArgs(queue, s_write_out);
            Py_XDECREF(r);
            if (r == NULL)
                failed = 1;
        }
        Py_DECREF(queue);
        if (failed)
            break;
        if ((int64_t)PyByteArray_GET_SIZE(c.log_buf) >= c.commit_limit) {
            stop = STOP_COMMIT;
            break;
        }
    }

    topic_clear(&t);
    scratch_free(&s);
    PyBuffer_Release(&view);
    int wb = ctx_write_back(ctx, &c, count, stop);
    ctx_release(&c);
    if (failed || wb < 0)
        return NULL;
    return PyLong_FromSsize_t(pos);
}

/* crc32(data) -> int: the body CRC this module writes (zlib.crc32's value), for the tests. */
static PyObject *crc32_py(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t c = crc32_ieee(v.buf, v.len);
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef methods[] = {
    {"serve", (PyCFunction)(void (*)(void))serve, METH_FASTCALL, serve_doc},
    {"crc32", crc32_py, METH_O, "crc32(data) -> int: CRC-32 (IEEE), the same value as zlib.crc32(data)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "krocket.broker.fastpath._cserve",
    "The C implementation of the broker's per-read send fast path (the Python twin is fastpath.pure).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cserve(void) {
    crc_init();
    if (intern_names() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "STOP_END", STOP_END) < 0 || PyModule_AddIntConstant(m, "STOP_SLOW", STOP_SLOW) < 0 ||
        PyModule_AddIntConstant(m, "STOP_COMMIT", STOP_COMMIT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

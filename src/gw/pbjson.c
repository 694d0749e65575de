/* The jsonpb mapping, driven by protobuf-c descriptors. JSON -> wire
 * follows jsonpb 1.3.5's Unmarshaler (AllowUnknownFields) and the Go
 * encoding/json rules it falls back on, with their error texts; wire ->
 * JSON follows its Marshaler with OrigName=true. */
#include "gw/json_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

struct dctx {
    char *err;
    size_t errlen;
};

struct span {
    const uint8_t *p;
    size_t n;
};

struct member {
    size_t key, keylen; /* decoded key in the object's key buffer */
    struct span v;
};

static int errf(struct dctx *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err, x->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static struct span trim(const uint8_t *p, size_t n)
{
    while (n && is_space(p[0]))
        p++, n--;
    while (n && is_space(p[n - 1]))
        n--;
    return (struct span){ p, n };
}

/* encoding/json's name for the kind of a JSON value. */
static const char *kind_word(struct span v)
{
    switch (v.n ? v.p[0] : 'n') {
    case '{': return "object";
    case '[': return "array";
    case '"': return "string";
    case 't': case 'f': return "bool";
    case 'n': return "null";
    }
    return "number";
}

/* Go's type name: etcdserverpb.RangeRequest.SortOrder ->
 * etcdserverpb.RangeRequest_SortOrder. */
static void go_enum_name(const ProtobufCEnumDescriptor *ed, char *out, size_t cap)
{
    size_t pl = ed->package_name ? strlen(ed->package_name) : 0;
    snprintf(out, cap, "%s", ed->name);
    for (size_t i = pl ? pl + 1 : 0; out[i]; i++)
        if (out[i] == '.')
            out[i] = '_';
}

static const char *go_type(const ProtobufCFieldDescriptor *f, char *tmp, size_t cap)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: return "int32";
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: return "int64";
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32: return "uint32";
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: return "uint64";
    case PROTOBUF_C_TYPE_FLOAT: return "float32";
    case PROTOBUF_C_TYPE_DOUBLE: return "float64";
    case PROTOBUF_C_TYPE_BOOL: return "bool";
    case PROTOBUF_C_TYPE_STRING: return "string";
    case PROTOBUF_C_TYPE_BYTES: return "[]uint8";
    case PROTOBUF_C_TYPE_ENUM:
        go_enum_name(f->descriptor, tmp, cap);
        return tmp;
    case PROTOBUF_C_TYPE_MESSAGE: return "map[string]json.RawMessage";
    }
    return "?";
}

static int type_err(struct dctx *x, struct span v, const char *type)
{
    return errf(x, "json: cannot unmarshal %s into Go value of type %s", kind_word(v), type);
}

/* ---- wire output ---- */

static void put_varint(struct buf *b, uint64_t v)
{
    uint8_t t[10];
    size_t n = 0;
    while (v >= 0x80) {
        t[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    t[n++] = (uint8_t)v;
    buf_append(b, t, n);
}

static void put_tag(struct buf *b, uint32_t id, unsigned wt)
{
    put_varint(b, ((uint64_t)id << 3) | wt);
}

static void put_fixed(struct buf *b, uint64_t v, size_t n)
{
    uint8_t t[8];
    for (size_t i = 0; i < n; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    buf_append(b, t, n);
}

static unsigned wire_type(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FLOAT: return 5;
    case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_DOUBLE: return 1;
    case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE: return 2;
    default: return 0;
    }
}

/* @v: the value's bits (signed values sign-extended to 64 bits). */
static void put_scalar(struct buf *b, ProtobufCType t, uint64_t v)
{
    switch (t) {
    case PROTOBUF_C_TYPE_SINT32: {
        int32_t s = (int32_t)v;
        put_varint(b, (uint32_t)(((uint32_t)s << 1) ^ (uint32_t)(s >> 31)));
        return;
    }
    case PROTOBUF_C_TYPE_SINT64: {
        int64_t s = (int64_t)v;
        put_varint(b, ((uint64_t)s << 1) ^ (uint64_t)(s >> 63));
        return;
    }
    default:
        break;
    }
    switch (wire_type(t)) {
    case 5: put_fixed(b, v, 4); return;
    case 1: put_fixed(b, v, 8); return;
    default: put_varint(b, v); return;
    }
}

static void put_len(struct buf *b, uint32_t id, const void *p, size_t n)
{
    put_tag(b, id, 2);
    put_varint(b, n);
    buf_append(b, p, n);
}

/* ---- JSON -> values ---- */

static int is_intlike(ProtobufCType t)
{
    return t != PROTOBUF_C_TYPE_FLOAT && t != PROTOBUF_C_TYPE_DOUBLE &&
           t != PROTOBUF_C_TYPE_BOOL && t != PROTOBUF_C_TYPE_ENUM;
}

static int is_signed(ProtobufCType t)
{
    return t == PROTOBUF_C_TYPE_INT32 || t == PROTOBUF_C_TYPE_SINT32 ||
           t == PROTOBUF_C_TYPE_SFIXED32 || t == PROTOBUF_C_TYPE_INT64 ||
           t == PROTOBUF_C_TYPE_SINT64 || t == PROTOBUF_C_TYPE_SFIXED64 ||
           t == PROTOBUF_C_TYPE_ENUM;
}

static int is_32(ProtobufCType t)
{
    return t == PROTOBUF_C_TYPE_INT32 || t == PROTOBUF_C_TYPE_SINT32 ||
           t == PROTOBUF_C_TYPE_SFIXED32 || t == PROTOBUF_C_TYPE_UINT32 ||
           t == PROTOBUF_C_TYPE_FIXED32 || t == PROTOBUF_C_TYPE_ENUM;
}

/* strconv.ParseInt/ParseUint(s, 10, 64) plus reflect's overflow check. */
static int parse_int(struct span v, ProtobufCType t, uint64_t *out)
{
    const uint8_t *p = v.p;
    size_t n = v.n;
    int neg = 0;
    if (n && (p[0] == '-' || p[0] == '+') && is_signed(t)) {
        neg = p[0] == '-';
        p++, n--;
    }
    if (n == 0)
        return -1;
    uint64_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        if (u > (UINT64_MAX - (p[i] - '0')) / 10)
            return -1;
        u = u * 10 + (p[i] - '0');
    }
    if (is_signed(t)) {
        uint64_t lim = is_32(t) ? (uint64_t)INT32_MAX : (uint64_t)INT64_MAX;
        if (u > lim + (uint64_t)neg)
            return -1;
        *out = neg ? (uint64_t)0 - u : u;
    } else {
        if (is_32(t) && u > UINT32_MAX)
            return -1;
        *out = u;
    }
    return 0;
}

static int parse_float(struct span v, ProtobufCType t, uint64_t *out)
{
    char tmp[64];
    if (v.n >= sizeof tmp)
        return -1;
    memcpy(tmp, v.p, v.n);
    tmp[v.n] = 0;
    errno = 0;
    double d = strtod(tmp, NULL);
    if (errno == ERANGE && d != 0)
        return -1;
    if (t == PROTOBUF_C_TYPE_FLOAT) {
        float f = (float)d;
        uint32_t u;
        if (d != 0 && (f - f != 0))
            return -1;
        memcpy(&u, &f, 4);
        *out = u;
    } else {
        memcpy(out, &d, 8);
    }
    return 0;
}

/* Numbers, bools and enums. *isnull: the value was null (field unset). */
static int dec_scalar(struct dctx *x, const ProtobufCFieldDescriptor *f,
                      struct span v, uint64_t *val, int *isnull)
{
    char tn[256];
    const char *type = go_type(f, tn, sizeof tn);
    *val = 0;
    *isnull = 0;
    if (f->type == PROTOBUF_C_TYPE_ENUM && v.p[0] == '"') {
        /* jsonpb looks the raw text up: no unquoting */
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        struct span s = { v.p + 1, v.n - 2 };
        for (unsigned i = 0; i < ed->n_values; i++) {
            const char *name = ed->values[i].name;
            if (strlen(name) == s.n && memcmp(name, s.p, s.n) == 0) {
                *val = (uint64_t)(int64_t)ed->values[i].value;
                return 0;
            }
        }
        struct buf q;
        buf_init(&q);
        json_goquote(&q, s.p, s.n);
        errf(x, "unknown value %.*s for enum %s", (int)q.len, (const char *)q.data, type);
        buf_free(&q);
        return -1;
    }
    if (f->type == PROTOBUF_C_TYPE_BOOL) {
        if (v.p[0] == 'n')
            *isnull = 1;
        else if (v.p[0] == 't' || v.p[0] == 'f')
            *val = v.p[0] == 't';
        else
            return type_err(x, v, type);
        return 0;
    }
    if (v.p[0] == '"' && f->type != PROTOBUF_C_TYPE_ENUM) {
        /* a quoted number: the quotes go and json.Unmarshal parses the rest */
        if (json_check_valid(v.p + 1, v.n - 2, x->err, x->errlen) < 0)
            return -1;
        v = trim(v.p + 1, v.n - 2);
    }
    if (v.p[0] == 'n') {
        *isnull = 1;
        return 0;
    }
    if (strchr("\"tf[{", v.p[0]))
        return type_err(x, v, type);
    int rc = is_intlike(f->type) || f->type == PROTOBUF_C_TYPE_ENUM
                 ? parse_int(v, f->type, val) : parse_float(v, f->type, val);
    if (rc < 0)
        return errf(x, "json: cannot unmarshal number %.*s into Go value of type %s",
                    (int)(v.n > 200 ? 200 : v.n), (const char *)v.p, type);
    return 0;
}

/* encoding/json decoding an array into []byte: each element a uint8. */
static int dec_byte_array(struct dctx *x, struct span v, struct buf *out)
{
    size_t i = 1;
    for (;;) {
        while (i < v.n && (is_space(v.p[i]) || v.p[i] == ','))
            i++;
        if (i >= v.n || v.p[i] == ']')
            return 0;
        size_t k = json_skip_value(v.p + i, v.n - i);
        struct span e = { v.p + i, k };
        uint64_t u = 0;
        if (e.p[0] == 'n') {
            u = 0;
        } else if (strchr("\"tf[{", e.p[0])) {
            return type_err(x, e, "uint8");
        } else if (parse_int(e, PROTOBUF_C_TYPE_UINT64, &u) < 0 || u > 255) {
            return errf(x, "json: cannot unmarshal number %.*s into Go value of type uint8",
                        (int)(e.n > 200 ? 200 : e.n), (const char *)e.p);
        }
        uint8_t b = (uint8_t)u;
        buf_append(out, &b, 1);
        i += k;
    }
}

/* Strings and bytes; *isnull as dec_scalar. */
static int dec_bytes(struct dctx *x, const ProtobufCFieldDescriptor *f,
                     struct span v, struct buf *out, int *isnull)
{
    *isnull = 0;
    if (v.p[0] == 'n') {
        *isnull = 1;
        return 0;
    }
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        if (v.p[0] != '"')
            return type_err(x, v, "string");
        json_unquote(out, v.p + 1, v.n - 2);
        return 0;
    }
    if (v.p[0] == '[')
        return dec_byte_array(x, v, out);
    if (v.p[0] != '"')
        return type_err(x, v, "[]uint8");
    struct buf s;
    size_t bad;
    buf_init(&s);
    json_unquote(&s, v.p + 1, v.n - 2);
    int rc = json_b64_decode(out, s.data, s.len, &bad);
    buf_free(&s);
    if (rc < 0)
        return errf(x, "illegal base64 data at input byte %zu", bad);
    return 0;
}

/* ---- messages ---- */

static int dec_message(struct dctx *x, const ProtobufCMessageDescriptor *d,
                       struct span v, struct buf *out, int depth);

/* The members of the valid object @v; keys decoded into @keys. */
static size_t members(struct span v, struct buf *keys, struct member **out)
{
    size_t n = 0, cap = 0, i = 1;
    struct member *m = NULL;
    for (;;) {
        while (i < v.n && (is_space(v.p[i]) || v.p[i] == ','))
            i++;
        if (i >= v.n || v.p[i] != '"')
            break;
        size_t k = json_skip_value(v.p + i, v.n - i);
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            m = cairn_realloc(m, cap * sizeof *m);
        }
        m[n].key = keys->len;
        json_unquote(keys, v.p + i + 1, k >= 2 ? k - 2 : 0);
        m[n].keylen = keys->len - m[n].key;
        i += k;
        while (i < v.n && (is_space(v.p[i]) || v.p[i] == ':'))
            i++;
        k = json_skip_value(v.p + i, v.n - i);
        m[n].v = (struct span){ v.p + i, k };
        n++;
        i += k;
    }
    *out = m;
    return n;
}

/* protoc's json_name: drop '_' and uppercase the letter after it. */
static int camel_eq(const char *name, const uint8_t *k, size_t n)
{
    size_t j = 0;
    int up = 0;
    for (; *name; name++) {
        if (*name == '_') {
            up = 1;
            continue;
        }
        char c = up && *name >= 'a' && *name <= 'z' ? (char)(*name - 32) : *name;
        up = 0;
        if (j >= n || k[j++] != (uint8_t)c)
            return 0;
    }
    return j == n;
}

static size_t camel_len(const char *name)
{
    size_t n = 0;
    for (; *name; name++)
        n += *name != '_';
    return n;
}

/* jsonpb's consumeField for every field at once: hits[i] is the last member
 * under field i's camel name, else the last under its proto name. */
static void match_fields(const ProtobufCMessageDescriptor *d, const struct member *m,
                         size_t n, const uint8_t *keys, const struct member **hits)
{
    unsigned nf = d->n_fields;
    size_t *lens = cairn_malloc(2 * nf * sizeof *lens + 1);
    uint8_t *camel = cairn_calloc(nf + 1, 1);
    for (unsigned i = 0; i < nf; i++) {
        lens[2 * i] = strlen(d->fields[i].name);
        lens[2 * i + 1] = camel_len(d->fields[i].name);
        hits[i] = NULL;
    }
    for (size_t j = 0; j < n; j++) {
        const uint8_t *k = keys + m[j].key;
        size_t kl = m[j].keylen;
        for (unsigned i = 0; i < nf; i++) {
            const char *name = d->fields[i].name;
            if (kl == lens[2 * i + 1] && camel_eq(name, k, kl)) {
                hits[i] = &m[j];
                camel[i] = 1;
            } else if (!camel[i] && kl == lens[2 * i] && memcmp(k, name, kl) == 0) {
                hits[i] = &m[j];
            }
        }
    }
    cairn_free(camel);
    cairn_free(lens);
}

static int packable(ProtobufCType t)
{
    return t != PROTOBUF_C_TYPE_STRING && t != PROTOBUF_C_TYPE_BYTES &&
           t != PROTOBUF_C_TYPE_MESSAGE;
}

/* One value of field @f (one element if repeated). @always: 1 emits zero
 * values, 2 also a null scalar as zero, 4 a null message as an empty one. A
 * oneof member is present even at zero or null (jsonpb sets the wrapper),
 * but a null message member leaves a nil pointer that Go does not marshal. */
static int dec_one(struct dctx *x, const ProtobufCFieldDescriptor *f, struct span v,
                   struct buf *out, int always, int depth)
{
    struct buf sub;
    int isnull, rc;
    uint64_t val;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        if (v.p[0] == 'n' && !(always & 4))
            return 0;
        buf_init(&sub);
        rc = dec_message(x, f->descriptor, v, &sub, depth + 1);
        if (rc == 0)
            put_len(out, f->id, sub.data, sub.len);
        buf_free(&sub);
        return rc;
    }
    if (!packable(f->type)) {
        buf_init(&sub);
        rc = dec_bytes(x, f, v, &sub, &isnull);
        if (rc == 0 && (sub.len || (always && (!isnull || (always & 2)))))
            put_len(out, f->id, sub.data, sub.len);
        buf_free(&sub);
        return rc;
    }
    if (dec_scalar(x, f, v, &val, &isnull) < 0)
        return -1;
    if (val || (always && (!isnull || (always & 2)))) {
        put_tag(out, f->id, wire_type(f->type));
        put_scalar(out, f->type, val);
    }
    return 0;
}

static int dec_repeated(struct dctx *x, const ProtobufCFieldDescriptor *f, struct span v,
                        struct buf *out, int depth)
{
    if (v.p[0] == 'n')
        return 0;
    if (v.p[0] != '[')
        return type_err(x, v, "[]json.RawMessage");
    int packed = packable(f->type) && (f->flags & PROTOBUF_C_FIELD_FLAG_PACKED);
    struct buf pk;
    buf_init(&pk);
    size_t i = 1;
    int rc = 0;
    for (;;) {
        while (i < v.n && (is_space(v.p[i]) || v.p[i] == ','))
            i++;
        if (i >= v.n || v.p[i] == ']')
            break;
        size_t k = json_skip_value(v.p + i, v.n - i);
        struct span e = { v.p + i, k };
        i += k;
        if (packed) {
            uint64_t val;
            int isnull;
            if ((rc = dec_scalar(x, f, e, &val, &isnull)) < 0)
                break;
            put_scalar(&pk, f->type, val);
        } else if ((rc = dec_one(x, f, e, out, 7, depth)) < 0) {
            break;
        }
    }
    if (rc == 0 && pk.len)
        put_len(out, f->id, pk.data, pk.len);
    buf_free(&pk);
    return rc;
}

static int dec_fields(struct dctx *x, const ProtobufCMessageDescriptor *d,
                      const struct member *m, size_t n, const uint8_t *keys,
                      struct buf *out, int depth)
{
    char *oneof_err = NULL;
    int rc = 0;
    const struct member **hits = cairn_malloc((d->n_fields + 1) * sizeof *hits);
    match_fields(d, m, n, keys, hits);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const struct member *fm = hits[i];
        if (!fm)
            continue;
        int oneof = (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0;
        struct span v = trim(fm->v.p, fm->v.n);
        if (v.n == 0)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            rc = dec_repeated(x, f, v, out, depth);
        else
            rc = dec_one(x, f, v, out, oneof ? 3 : f->label != PROTOBUF_C_LABEL_NONE, depth);
        if (rc < 0 && oneof) {
            /* jsonpb decodes oneof members after all other fields */
            if (!oneof_err)
                oneof_err = cairn_strdup(x->err);
            rc = 0;
        } else if (rc < 0) {
            break;
        }
    }
    if (rc == 0 && oneof_err) {
        snprintf(x->err, x->errlen, "%s", oneof_err);
        rc = -1;
    }
    cairn_free(oneof_err);
    cairn_free(hits);
    return rc;
}

static int dec_message(struct dctx *x, const ProtobufCMessageDescriptor *d,
                       struct span v, struct buf *out, int depth)
{
    if (v.p[0] == 'n')
        return 0;
    if (v.p[0] != '{')
        return type_err(x, v, "map[string]json.RawMessage");
    if (depth > JSON_MAX_DEPTH) /* the scanner bounds this already */
        return errf(x, "exceeded max depth");
    struct buf keys;
    struct member *m;
    buf_init(&keys);
    size_t n = members(v, &keys, &m);
    int rc = dec_fields(x, d, m, n, keys.data, out, depth);
    cairn_free(m);
    buf_free(&keys);
    return rc;
}

int pbjson_decode(const ProtobufCMessageDescriptor *d, const uint8_t *json,
                  size_t len, struct buf *wire, char *err, size_t errlen)
{
    char scratch[1];
    struct dctx x = { errlen ? err : scratch, errlen ? errlen : sizeof scratch };
    struct json_scan s;
    size_t start = 0, end = len, i;
    err = x.err;
    errlen = x.errlen;
    err[0] = 0;
    while (start < len && is_space(json[start]))
        start++;
    if (start == len)
        return 0; /* io.EOF: an empty request */
    json_scan_init(&s);
    for (i = start; i < len; i++) {
        int r = json_scan_step(&s, json[i]);
        if (r == JSON_SCAN_CLOSE) {
            end = i + 1;
            break;
        }
        if (r == JSON_SCAN_END) {
            end = i;
            break;
        }
        if (r == JSON_SCAN_ERR) {
            json_scan_error(&s, err, errlen);
            return -1;
        }
    }
    if (i == len && !json_scan_eof(&s))
        return errf(&x, "unexpected EOF");
    return dec_message(&x, d, trim(json + start, end - start), wire, 0);
}

/* ---- wire -> JSON ---- */

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return 8;
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM: return sizeof(int);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    default: return 4;
    }
}

static int is_zero(ProtobufCType t, const void *p)
{
    switch (t) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s == NULL || s[0] == 0;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)p == NULL;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p == 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p == 0;
    default: {
        static const uint8_t zero[8];
        return memcmp(p, zero, elem_size(t)) == 0;
    }
    }
}

static int enc_message(struct buf *out, const ProtobufCMessage *m, int depth);

static int enc_value(struct buf *out, const ProtobufCFieldDescriptor *f, const void *p,
                     int depth)
{
    char t[64];
    int n = 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
        n = snprintf(t, sizeof t, "%" PRId32, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
        n = snprintf(t, sizeof t, "%" PRIu32, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
        n = snprintf(t, sizeof t, "\"%" PRId64 "\"", *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        n = snprintf(t, sizeof t, "\"%" PRIu64 "\"", *(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        n = snprintf(t, sizeof t, "%.9g", (double)*(const float *)p);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        n = snprintf(t, sizeof t, "%.17g", *(const double *)p);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        n = snprintf(t, sizeof t, "%s", *(const protobuf_c_boolean *)p ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);
        if (ev)
            n = snprintf(t, sizeof t, "\"%s\"", ev->name);
        else
            n = snprintf(t, sizeof t, "%d", *(const int *)p);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        json_put_string(out, s ? s : "", s ? strlen(s) : 0);
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        buf_append(out, "\"", 1);
        json_b64_encode(out, b->data, b->len);
        buf_append(out, "\"", 1);
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        if (!sub) {
            buf_append(out, "{}", 2);
            return 0;
        }
        return enc_message(out, sub, depth + 1);
    }
    }
    buf_append(out, t, (size_t)n);
    return 0;
}

static int enc_message(struct buf *out, const ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    int first = 1;
    if (depth > 100)
        return -1;
    buf_append(out, "{", 1);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = base + f->offset;
        size_t n = 1;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(base + f->quantifier_offset);
            if (n == 0)
                continue;
        } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue;
        } else if (f->label == PROTOBUF_C_LABEL_NONE ||
                   f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING) {
            if (is_zero(f->type, p))
                continue;
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
                   !*(const protobuf_c_boolean *)(base + f->quantifier_offset)) {
            continue;
        }
        if (!first)
            buf_append(out, ",", 1);
        first = 0;
        json_put_string(out, f->name, strlen(f->name));
        buf_append(out, ":", 1);
        if (f->label != PROTOBUF_C_LABEL_REPEATED) {
            if (enc_value(out, f, p, depth) < 0)
                return -1;
            continue;
        }
        const char *arr = *(char *const *)p;
        buf_append(out, "[", 1);
        for (size_t j = 0; j < n; j++) {
            if (j)
                buf_append(out, ",", 1);
            if (enc_value(out, f, arr + j * elem_size(f->type), depth) < 0)
                return -1;
        }
        buf_append(out, "]", 1);
    }
    buf_append(out, "}", 1);
    return 0;
}

int pbjson_encode(const ProtobufCMessageDescriptor *d, const uint8_t *wire,
                  size_t len, struct buf *out)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, wire);
    if (!m)
        return -1;
    size_t mark = out->len;
    int rc = enc_message(out, m, 0);
    if (rc < 0)
        out->len = mark;
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

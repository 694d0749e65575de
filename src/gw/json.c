/* JSON for the gateway: a port of Go's encoding/json scanner (its states and
 * error texts), the incremental body splitter built on it, Go's string
 * unquoting and escaping, and Go's base64. */
#include "gw/json_int.h"

#include <stdio.h>
#include <string.h>

enum {
    S_BEGIN_VALUE_OR_EMPTY, S_BEGIN_VALUE, S_BEGIN_STRING_OR_EMPTY,
    S_BEGIN_STRING, S_END_VALUE, S_END_TOP, S_STR, S_STR_ESC, S_U, S_U1,
    S_U12, S_U123, S_NEG, S_1, S_0, S_DOT, S_DOT0, S_E, S_ESIGN, S_E0,
    S_T, S_TR, S_TRU, S_F, S_FA, S_FAL, S_FALS, S_N, S_NU, S_NUL, S_ERR,
};

static int is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

void json_scan_init(struct json_scan *s)
{
    memset(s, 0, sizeof *s);
    s->state = S_BEGIN_VALUE;
}

static int to(struct json_scan *s, int state)
{
    s->state = (uint8_t)state;
    return JSON_SCAN_CONT;
}

static int fail(struct json_scan *s, uint8_t c, const char *ctx)
{
    s->state = S_ERR;
    s->errc = c;
    s->errctx = ctx;
    return JSON_SCAN_ERR;
}

/* Go's pushParseState; our limit is JSON_MAX_DEPTH, not Go's 10000. */
static int push(struct json_scan *s, uint8_t c, int obj)
{
    if (s->depth >= JSON_MAX_DEPTH)
        return fail(s, c, "exceeded max depth");
    if (obj)
        s->objs |= (uint64_t)1 << s->depth;
    else
        s->objs &= ~((uint64_t)1 << s->depth);
    s->depth++;
    s->objkey = obj;
    s->state = obj ? S_BEGIN_STRING_OR_EMPTY : S_BEGIN_VALUE_OR_EMPTY;
    return JSON_SCAN_CONT;
}

static int top_is_obj(const struct json_scan *s)
{
    return (s->objs >> (s->depth - 1)) & 1;
}

/* Closes the innermost object or array with byte @c. */
static int pop(struct json_scan *s)
{
    s->depth--;
    s->objkey = 0; /* a parent object is always at its value */
    if (s->depth == 0) {
        s->state = S_END_TOP;
        s->endtop = 1;
        return JSON_SCAN_CLOSE;
    }
    s->state = S_END_VALUE;
    return JSON_SCAN_CONT;
}

static int literal(struct json_scan *s, uint8_t c, uint8_t want, int next,
                   const char *ctx)
{
    return c == want ? to(s, next) : fail(s, c, ctx);
}

int json_scan_step(struct json_scan *s, uint8_t c)
{
    for (;;) {
        switch (s->state) {
        case S_BEGIN_VALUE_OR_EMPTY:
            if (is_space(c))
                return JSON_SCAN_CONT;
            if (c == ']')
                return pop(s);
            s->state = S_BEGIN_VALUE;
            continue;
        case S_BEGIN_VALUE:
            if (is_space(c))
                return JSON_SCAN_CONT;
            switch (c) {
            case '{': return push(s, c, 1);
            case '[': return push(s, c, 0);
            case '"': return to(s, S_STR);
            case '-': return to(s, S_NEG);
            case '0': return to(s, S_0);
            case 't': return to(s, S_T);
            case 'f': return to(s, S_F);
            case 'n': return to(s, S_N);
            }
            if (c >= '1' && c <= '9')
                return to(s, S_1);
            return fail(s, c, "looking for beginning of value");
        case S_BEGIN_STRING_OR_EMPTY:
            if (is_space(c))
                return JSON_SCAN_CONT;
            if (c == '}')
                return pop(s);
            s->state = S_BEGIN_STRING;
            continue;
        case S_BEGIN_STRING:
            if (is_space(c))
                return JSON_SCAN_CONT;
            if (c == '"')
                return to(s, S_STR);
            return fail(s, c, "looking for beginning of object key string");
        case S_END_VALUE:
            if (s->depth == 0) {
                s->state = S_END_TOP;
                s->endtop = 1;
                continue;
            }
            if (is_space(c))
                return JSON_SCAN_CONT;
            if (top_is_obj(s) && s->objkey) {
                if (c != ':')
                    return fail(s, c, "after object key");
                s->objkey = 0;
                s->state = S_BEGIN_VALUE;
                return JSON_SCAN_CONT;
            }
            if (top_is_obj(s)) {
                if (c == ',') {
                    s->objkey = 1;
                    s->state = S_BEGIN_STRING;
                    return JSON_SCAN_CONT;
                }
                if (c == '}')
                    return pop(s);
                return fail(s, c, "after object key:value pair");
            }
            if (c == ',')
                return to(s, S_BEGIN_VALUE);
            if (c == ']')
                return pop(s);
            return fail(s, c, "after array element");
        case S_END_TOP:
            if (!is_space(c))
                fail(s, c, "after top-level value");
            return JSON_SCAN_END;
        case S_STR:
            if (c == '"')
                return to(s, S_END_VALUE);
            if (c == '\\')
                return to(s, S_STR_ESC);
            if (c < 0x20)
                return fail(s, c, "in string literal");
            return JSON_SCAN_CONT;
        case S_STR_ESC:
            if (strchr("bfnrt\\/\"", c) && c)
                return to(s, S_STR);
            if (c == 'u')
                return to(s, S_U);
            return fail(s, c, "in string escape code");
        case S_U: case S_U1: case S_U12: case S_U123:
            if (!is_hex(c))
                return fail(s, c, "in \\u hexadecimal character escape");
            return to(s, s->state == S_U123 ? S_STR : s->state + 1);
        case S_NEG:
            if (c == '0')
                return to(s, S_0);
            if (c >= '1' && c <= '9')
                return to(s, S_1);
            return fail(s, c, "in numeric literal");
        case S_1:
            if (c >= '0' && c <= '9')
                return JSON_SCAN_CONT;
            s->state = S_0;
            continue;
        case S_0:
            if (c == '.')
                return to(s, S_DOT);
            if (c == 'e' || c == 'E')
                return to(s, S_E);
            s->state = S_END_VALUE;
            continue;
        case S_DOT:
            if (c >= '0' && c <= '9')
                return to(s, S_DOT0);
            return fail(s, c, "after decimal point in numeric literal");
        case S_DOT0:
            if (c >= '0' && c <= '9')
                return JSON_SCAN_CONT;
            if (c == 'e' || c == 'E')
                return to(s, S_E);
            s->state = S_END_VALUE;
            continue;
        case S_E:
            if (c == '+' || c == '-')
                return to(s, S_ESIGN);
            s->state = S_ESIGN;
            continue;
        case S_ESIGN:
            if (c >= '0' && c <= '9')
                return to(s, S_E0);
            return fail(s, c, "in exponent of numeric literal");
        case S_E0:
            if (c >= '0' && c <= '9')
                return JSON_SCAN_CONT;
            s->state = S_END_VALUE;
            continue;
        case S_T: return literal(s, c, 'r', S_TR, "in literal true (expecting 'r')");
        case S_TR: return literal(s, c, 'u', S_TRU, "in literal true (expecting 'u')");
        case S_TRU: return literal(s, c, 'e', S_END_VALUE, "in literal true (expecting 'e')");
        case S_F: return literal(s, c, 'a', S_FA, "in literal false (expecting 'a')");
        case S_FA: return literal(s, c, 'l', S_FAL, "in literal false (expecting 'l')");
        case S_FAL: return literal(s, c, 's', S_FALS, "in literal false (expecting 's')");
        case S_FALS: return literal(s, c, 'e', S_END_VALUE, "in literal false (expecting 'e')");
        case S_N: return literal(s, c, 'u', S_NU, "in literal null (expecting 'u')");
        case S_NU: return literal(s, c, 'l', S_NUL, "in literal null (expecting 'l')");
        case S_NUL: return literal(s, c, 'l', S_END_VALUE, "in literal null (expecting 'l')");
        default:
            return JSON_SCAN_ERR;
        }
    }
}

int json_scan_eof(struct json_scan *s)
{
    if (s->state == S_ERR)
        return 0;
    if (s->endtop)
        return 1;
    json_scan_step(s, ' ');
    return s->endtop && s->state != S_ERR;
}

/* Go's quoteChar: strconv.Quote of the byte as a rune, in single quotes. */
static void quote_char(char *out, size_t cap, uint8_t c)
{
    if (c == '\'') {
        snprintf(out, cap, "'\\''");
        return;
    }
    if (c == '"') {
        snprintf(out, cap, "'\"'");
        return;
    }
    struct buf b;
    buf_init(&b);
    uint8_t u[2] = { (uint8_t)(0xc0 | (c >> 6)), (uint8_t)(0x80 | (c & 0x3f)) };
    if (c < 0x80)
        json_goquote(&b, &c, 1);
    else
        json_goquote(&b, u, 2);
    /* b holds "...": swap the double quotes for single ones */
    snprintf(out, cap, "'%.*s'", (int)(b.len - 2), (const char *)b.data + 1);
    buf_free(&b);
}

void json_scan_error(const struct json_scan *s, char *err, size_t errlen)
{
    char q[16];
    quote_char(q, sizeof q, s->errc);
    snprintf(err, errlen, "invalid character %s %s", q, s->errctx ? s->errctx : "");
}

int json_check_valid(const uint8_t *p, size_t n, char *err, size_t errlen)
{
    struct json_scan s;
    json_scan_init(&s);
    for (size_t i = 0; i < n; i++) {
        json_scan_step(&s, p[i]);
        if (s.state == S_ERR) {
            json_scan_error(&s, err, errlen);
            return -1;
        }
    }
    if (json_scan_eof(&s))
        return 0;
    if (s.state == S_ERR && s.errctx && strcmp(s.errctx, "after top-level value"))
        json_scan_error(&s, err, errlen);
    else
        snprintf(err, errlen, "unexpected end of JSON input");
    return -1;
}

void json_split_init(struct json_split *s)
{
    json_scan_init(&s->sc);
    s->off = 0;
}

int json_split_next(struct json_split *s, const uint8_t *p, size_t n, size_t *end)
{
    for (; s->off < n; s->off++) {
        int r = json_scan_step(&s->sc, p[s->off]);
        if (r == JSON_SCAN_CLOSE) {
            *end = ++s->off;
            return 1;
        }
        if (r == JSON_SCAN_END) {
            *end = s->off;
            return 1;
        }
        if (r == JSON_SCAN_ERR)
            return -1;
    }
    return 0;
}

size_t json_skip_value(const uint8_t *p, size_t n)
{
    size_t i = 0;
    int depth = 0;
    do {
        if (i >= n)
            return n;
        uint8_t c = p[i];
        if (c == '"') {
            for (i++; i < n && p[i] != '"'; i++)
                if (p[i] == '\\')
                    i++;
            i++;
        } else if (c == '{' || c == '[') {
            depth++;
            i++;
        } else if (c == '}' || c == ']') {
            depth--;
            i++;
        } else if (c == ',' || c == ':' || is_space(c)) {
            i++;
        } else {
            while (i < n && !is_space(p[i]) && !strchr(",:]}", p[i]))
                i++;
        }
    } while (depth > 0);
    return i < n ? i : n;
}

size_t json_utf8_decode(const uint8_t *p, size_t n, uint32_t *r)
{
    uint8_t c = p[0];
    if (c < 0x80) {
        *r = c;
        return 1;
    }
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        *r = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        *r = c & 0x0f;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        *r = c & 0x07;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if (i > 1 && (p[i] & 0xc0) != 0x80)
            return 0;
        *r = (*r << 6) | (p[i] & 0x3f);
    }
    return len;
}

static void put_utf8(struct buf *out, uint32_t r)
{
    uint8_t u[4];
    size_t n;
    if (r < 0x80) {
        u[0] = (uint8_t)r;
        n = 1;
    } else if (r < 0x800) {
        u[0] = (uint8_t)(0xc0 | (r >> 6));
        u[1] = (uint8_t)(0x80 | (r & 0x3f));
        n = 2;
    } else if (r < 0x10000) {
        u[0] = (uint8_t)(0xe0 | (r >> 12));
        u[1] = (uint8_t)(0x80 | ((r >> 6) & 0x3f));
        u[2] = (uint8_t)(0x80 | (r & 0x3f));
        n = 3;
    } else {
        u[0] = (uint8_t)(0xf0 | (r >> 18));
        u[1] = (uint8_t)(0x80 | ((r >> 12) & 0x3f));
        u[2] = (uint8_t)(0x80 | ((r >> 6) & 0x3f));
        u[3] = (uint8_t)(0x80 | (r & 0x3f));
        n = 4;
    }
    buf_append(out, u, n);
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

/* The rune of a valid "\uXXXX" at p (6 bytes), or -1. */
static long u4(const uint8_t *p, size_t n)
{
    if (n < 6 || p[0] != '\\' || p[1] != 'u')
        return -1;
    long r = 0;
    for (int i = 2; i < 6; i++) {
        if (!is_hex(p[i]))
            return -1;
        r = r * 16 + hexval(p[i]);
    }
    return r;
}

void json_unquote(struct buf *out, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c == '\\' && i + 1 < n) {
            const char *from = "bfnrt\\/\"", *to = "\b\f\n\r\t\\/\"";
            const char *k = p[i + 1] ? strchr(from, p[i + 1]) : NULL;
            if (k) {
                buf_append(out, to + (k - from), 1);
                i += 2;
                continue;
            }
            long r = u4(p + i, n - i);
            if (r < 0) { /* not reached on scanned input */
                i++;
                continue;
            }
            i += 6;
            if (r >= 0xd800 && r < 0xe000) {
                long r2 = u4(p + i, n - i);
                if (r < 0xdc00 && r2 >= 0xdc00 && r2 < 0xe000) {
                    r = 0x10000 + ((r - 0xd800) << 10) + (r2 - 0xdc00);
                    i += 6;
                } else {
                    r = 0xfffd;
                }
            }
            put_utf8(out, (uint32_t)r);
            continue;
        }
        if (c != '\\' && c < 0x80) { /* a run of plain ASCII */
            size_t j = i + 1;
            while (j < n && p[j] != '\\' && p[j] < 0x80)
                j++;
            buf_append(out, p + i, j - i);
            i = j;
            continue;
        }
        uint32_t r;
        size_t k = json_utf8_decode(p + i, n - i, &r);
        if (k == 0) {
            put_utf8(out, 0xfffd);
            i++;
        } else {
            buf_append(out, p + i, k);
            i += k;
        }
    }
}

static const char hexdig[] = "0123456789abcdef";

void json_put_string(struct buf *out, const char *str, size_t n)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0, start = 0;
    buf_reserve(out, n + 2);
    buf_append(out, "\"", 1);
    while (i < n) {
        uint8_t b = s[i];
        char esc[8];
        size_t elen = 0, adv = 1;
        if (b < 0x80) {
            if (b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&') {
                i++;
                continue;
            }
            esc[0] = '\\';
            elen = 2;
            if (b == '"' || b == '\\')
                esc[1] = (char)b;
            else if (b == '\n')
                esc[1] = 'n';
            else if (b == '\r')
                esc[1] = 'r';
            else if (b == '\t')
                esc[1] = 't';
            else {
                memcpy(esc + 1, "u00", 3);
                esc[4] = hexdig[b >> 4];
                esc[5] = hexdig[b & 0xf];
                elen = 6;
            }
        } else {
            uint32_t r;
            size_t k = json_utf8_decode(s + i, n - i, &r);
            if (k == 0) {
                memcpy(esc, "\\ufffd", 6);
                elen = 6;
            } else if (r == 0x2028 || r == 0x2029) {
                memcpy(esc, "\\u202", 5);
                esc[5] = hexdig[r & 0xf];
                elen = 6;
                adv = k;
            } else {
                i += k;
                continue;
            }
        }
        buf_append(out, s + start, i - start);
        buf_append(out, esc, elen);
        i += adv;
        start = i;
    }
    buf_append(out, s + start, n - start);
    buf_append(out, "\"", 1);
}

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void json_b64_encode(struct buf *out, const uint8_t *p, size_t n)
{
    buf_reserve(out, (n + 2) / 3 * 4);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char q[4] = { b64[v >> 18], b64[(v >> 12) & 63],
                      i + 1 < n ? b64[(v >> 6) & 63] : '=',
                      i + 2 < n ? b64[v & 63] : '=' };
        buf_append(out, q, 4);
    }
}

static int b64val(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static int skip_nl(const uint8_t *p, size_t n, size_t si)
{
    while (si < n && (p[si] == '\n' || p[si] == '\r'))
        si++;
    return (int)si;
}

/* Go's decodeQuantum; returns the bytes produced or -1 with *bad. */
static int quantum(const uint8_t *p, size_t n, size_t *si, uint8_t dst[3], size_t *bad)
{
    uint8_t d[4] = { 0, 0, 0, 0 };
    int dlen = 4, j;
    for (j = 0; j < 4; j++) {
        if (*si == n) {
            if (j == 0)
                return 0;
            *bad = *si - j;
            return -1;
        }
        uint8_t in = p[(*si)++];
        int v = b64val(in);
        if (v >= 0) {
            d[j] = (uint8_t)v;
            continue;
        }
        if (in == '\n' || in == '\r') {
            j--;
            continue;
        }
        if (in != '=' || j < 2) {
            *bad = *si - 1;
            return -1;
        }
        if (j == 2) {
            *si = (size_t)skip_nl(p, n, *si);
            if (*si == n) {
                *bad = n;
                return -1;
            }
            if (p[*si] != '=') {
                *bad = *si - 1;
                return -1;
            }
            (*si)++;
        }
        *si = (size_t)skip_nl(p, n, *si);
        if (*si < n) {
            *bad = *si;
            return -1;
        }
        dlen = j;
        break;
    }
    uint32_t v = (uint32_t)d[0] << 18 | (uint32_t)d[1] << 12 | (uint32_t)d[2] << 6 | d[3];
    dst[0] = (uint8_t)(v >> 16);
    dst[1] = (uint8_t)(v >> 8);
    dst[2] = (uint8_t)v;
    return dlen - 1;
}

int json_b64_decode(struct buf *out, const uint8_t *p, size_t n, size_t *bad)
{
    size_t si = 0;
    buf_reserve(out, n / 4 * 3 + 3);
    while (si < n) {
        int k = quantum(p, n, &si, out->data + out->len, bad);
        if (k < 0)
            return -1;
        out->len += (size_t)k;
        if (out->cap - out->len < 3)
            buf_reserve(out, 3);
    }
    return 0;
}

/* strconv.IsPrint for the runes we meet; U+00A0-U+00FF minus nbsp and
 * soft hyphen are printable, C1 controls are not. Other non-ASCII runes
 * are taken as printable (Go's tables are not copied). */
static int is_print(uint32_t r)
{
    if (r < 0x20 || r == 0x7f)
        return 0;
    if (r >= 0x80 && r < 0xa0)
        return 0;
    if (r == 0xa0 || r == 0xad)
        return 0;
    if (r == 0x2028 || r == 0x2029 || r == 0xfeff)
        return 0;
    return 1;
}

void json_goquote(struct buf *out, const uint8_t *p, size_t n)
{
    char e[16];
    buf_append(out, "\"", 1);
    for (size_t i = 0; i < n;) {
        uint32_t r;
        size_t k = json_utf8_decode(p + i, n - i, &r);
        if (k == 0) {
            snprintf(e, sizeof e, "\\x%02x", p[i]);
            buf_append(out, e, 4);
            i++;
            continue;
        }
        if (r == '"' || r == '\\') {
            e[0] = '\\';
            e[1] = (char)r;
            buf_append(out, e, 2);
        } else if (is_print(r)) {
            buf_append(out, p + i, k);
        } else {
            const char *s = NULL;
            switch (r) {
            case 7: s = "\\a"; break;
            case 8: s = "\\b"; break;
            case 12: s = "\\f"; break;
            case 10: s = "\\n"; break;
            case 13: s = "\\r"; break;
            case 9: s = "\\t"; break;
            case 11: s = "\\v"; break;
            }
            if (s)
                snprintf(e, sizeof e, "%s", s);
            else if (r < 0x20 || r == 0x7f)
                snprintf(e, sizeof e, "\\x%02x", (unsigned)r);
            else
                snprintf(e, sizeof e, "\\u%04x", (unsigned)r);
            buf_append(out, e, strlen(e));
        }
        i += k;
    }
    buf_append(out, "\"", 1);
}

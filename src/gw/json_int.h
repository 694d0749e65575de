/* JSON helpers shared by gw/json.c and gw/pbjson.c (Go encoding/json
 * behaviour: scanner error texts, string unquoting, base64). */
#ifndef GW_JSON_INT_H
#define GW_JSON_INT_H
#include "gw/pbjson.h"

enum {
    JSON_SCAN_CONT,  /* byte consumed, value goes on */
    JSON_SCAN_END,   /* the top-level value ended before this byte */
    JSON_SCAN_CLOSE, /* this byte closed the top-level object or array */
    JSON_SCAN_ERR,   /* syntax error: json_scan_error() has the text */
};

void json_scan_init(struct json_scan *s);
int json_scan_step(struct json_scan *s, uint8_t c);
/* Input ended: 1 if the top-level value is complete (feeds a space). */
int json_scan_eof(struct json_scan *s);
/* "invalid character 'x' looking for beginning of value" and friends. */
void json_scan_error(const struct json_scan *s, char *err, size_t errlen);

/* Go's json.Unmarshal syntax check of p[0..n) (one value, spaces around):
 * 0, or -1 with Go's text ("unexpected end of JSON input", ...). */
int json_check_valid(const uint8_t *p, size_t n, char *err, size_t errlen);

/* The end of the valid JSON value that starts at p[0] (no leading space). */
size_t json_skip_value(const uint8_t *p, size_t n);
/* p[0..n) is the inside of a valid string literal: appends its Go
 * decoding (escapes; invalid UTF-8 and lone surrogates as U+FFFD). */
void json_unquote(struct buf *out, const uint8_t *p, size_t n);

/* Go base64.StdEncoding.Decode: 0, or -1 with *bad = the input byte Go
 * reports ("illegal base64 data at input byte N"). */
int json_b64_decode(struct buf *out, const uint8_t *p, size_t n, size_t *bad);
void json_b64_encode(struct buf *out, const uint8_t *p, size_t n);

/* Appends Go's %q of the bytes p[0..n) (strconv.Quote), NUL-free. */
void json_goquote(struct buf *out, const uint8_t *p, size_t n);

/* Decodes one UTF-8 sequence as Go's utf8.DecodeRune does: its length, or
 * 0 when invalid (Go: RuneError, size 1). */
size_t json_utf8_decode(const uint8_t *p, size_t n, uint32_t *r);

#endif

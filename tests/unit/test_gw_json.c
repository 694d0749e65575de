/* src/gw: the jsonpb mapping of etcd's gateway. Expected JSON strings and
 * error texts were taken from etcd 3.4.23's gateway (curl against
 * /usr/bin/etcd) where marked "etcd". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authpb/auth.pb-c.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "gw/pbjson.h"
#include "mvccpb/kv.pb-c.h"
#include "v3electionpb/v3election.pb-c.h"
#include "v3lockpb/v3lock.pb-c.h"

#define D(name) (&etcdserverpb__##name##__descriptor)

/* JSON -> wire -> JSON; asserts success and returns the JSON (static). */
static const char *rt(const ProtobufCMessageDescriptor *d, const char *json)
{
    static char out[8192];
    struct buf w, j;
    char err[256];
    buf_init(&w);
    buf_init(&j);
    int rc = pbjson_decode(d, (const uint8_t *)json, strlen(json), &w, err, sizeof err);
    if (rc != 0)
        fail_msg("decode %s: %s", json, err);
    assert_int_equal(pbjson_encode(d, w.data, w.len, &j), 0);
    /* the wire bytes are canonical: protobuf-c packs them back the same */
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, w.len, w.data);
    assert_non_null(m);
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *pk = test_malloc(n + 1);
    assert_int_equal(protobuf_c_message_pack(m, pk), n);
    assert_int_equal(n, w.len);
    assert_memory_equal(pk, w.data, n);
    test_free(pk);
    protobuf_c_message_free_unpacked(m, NULL);
    snprintf(out, sizeof out, "%.*s", (int)j.len, (const char *)j.data);
    buf_free(&w);
    buf_free(&j);
    return out;
}

/* The error text of decoding @json, or "" on success (static). */
static const char *derr_n(const ProtobufCMessageDescriptor *d, const char *json, size_t n)
{
    static char err[256];
    struct buf w;
    buf_init(&w);
    int rc = pbjson_decode(d, (const uint8_t *)json, n, &w, err, sizeof err);
    buf_free(&w);
    if (rc == 0)
        return "";
    assert_int_equal(rc, -1);
    assert_true(err[0] != 0);
    return err;
}

static const char *derr(const ProtobufCMessageDescriptor *d, const char *json)
{
    return derr_n(d, json, strlen(json));
}

/* Round trips of etcd's own answers: decoding and encoding give the same
 * bytes back, so both directions agree with etcd. */
static void etcd_responses_round_trip(void **state)
{
    (void)state;
    static const struct {
        const ProtobufCMessageDescriptor *d;
        const char *json;
    } t[] = {
        { D(range_response), "{\"header\":{\"cluster_id\":\"324952591200643719\",\"member_id\":\"3319814642761637952\",\"revision\":\"3\",\"raft_term\":\"2\"},\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":\"2\",\"mod_revision\":\"3\",\"version\":\"2\",\"value\":\"YmFy\"}],\"count\":\"1\"}" },
        { D(put_response), "{\"header\":{\"cluster_id\":\"324952591200643719\",\"member_id\":\"3319814642761637952\",\"revision\":\"2\",\"raft_term\":\"2\"}}" },
        { D(txn_response), "{\"header\":{\"cluster_id\":\"324952591200643719\",\"member_id\":\"3319814642761637952\",\"revision\":\"5\",\"raft_term\":\"2\"},\"responses\":[{\"response_range\":{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"YQ==\",\"create_revision\":\"5\",\"mod_revision\":\"5\",\"version\":\"1\",\"value\":\"PD4mIgo=\"}],\"count\":\"1\"}},{\"response_delete_range\":{\"header\":{\"revision\":\"5\"}}}]}" },
        { D(txn_response), "{\"header\":{\"revision\":\"4\"},\"responses\":[{\"response_put\":{\"header\":{\"revision\":\"4\"}}}]}" },
        { D(lease_grant_response), "{\"header\":{\"cluster_id\":\"324952591200643719\",\"member_id\":\"3319814642761637952\",\"revision\":\"5\",\"raft_term\":\"2\"},\"ID\":\"7587\",\"TTL\":\"60\"}" },
        { D(lease_time_to_live_response), "{\"header\":{\"revision\":\"5\",\"raft_term\":\"2\"},\"ID\":\"7587\",\"TTL\":\"59\",\"grantedTTL\":\"60\"}" },
        { D(lease_leases_response), "{\"header\":{\"revision\":\"5\"},\"leases\":[{\"ID\":\"7587\"}]}" },
        { D(status_response), "{\"header\":{\"cluster_id\":\"324952591200643719\",\"member_id\":\"3319814642761637952\",\"revision\":\"5\",\"raft_term\":\"2\"},\"version\":\"3.4.23\",\"dbSize\":\"20480\",\"leader\":\"3319814642761637952\",\"raftIndex\":\"10\",\"raftTerm\":\"2\",\"raftAppliedIndex\":\"10\",\"dbSizeInUse\":\"16384\"}" },
        { D(member_list_response), "{\"header\":{\"cluster_id\":\"324952591200643719\",\"member_id\":\"3319814642761637952\",\"raft_term\":\"2\"},\"members\":[{\"ID\":\"3319814642761637952\",\"name\":\"default\",\"peerURLs\":[\"http://127.0.0.1:23800\"],\"clientURLs\":[\"http://127.0.0.1:23790\"]}]}" },
        { D(auth_role_get_response), "{\"header\":{\"revision\":\"5\"},\"perm\":[{\"permType\":\"READWRITE\",\"key\":\"YQ==\",\"range_end\":\"Yg==\"},{\"key\":\"Yw==\"}]}" },
        { D(watch_response), "{\"header\":{\"cluster_id\":\"324952591200643719\",\"member_id\":\"3319814642761637952\",\"revision\":\"5\",\"raft_term\":\"2\"},\"created\":true}" },
        { D(watch_response), "{\"header\":{\"revision\":\"6\"},\"events\":[{\"kv\":{\"key\":\"dw==\",\"create_revision\":\"6\",\"mod_revision\":\"6\",\"version\":\"1\",\"value\":\"Mg==\"}}]}" },
        { D(watch_response), "{\"header\":{\"revision\":\"7\"},\"events\":[{\"type\":\"DELETE\",\"kv\":{\"key\":\"dw==\",\"mod_revision\":\"7\"},\"prev_kv\":{\"key\":\"dw==\",\"create_revision\":\"6\",\"mod_revision\":\"6\",\"version\":\"1\",\"value\":\"Mg==\"}}]}" },
        { D(lease_keep_alive_response), "{\"header\":{\"revision\":\"7\",\"raft_term\":\"2\"},\"ID\":\"7587\"}" },
        { D(alarm_response), "{}" },
        { D(hash_response), "{\"header\":{\"revision\":\"7\",\"raft_term\":\"2\"},\"hash\":2746719106}" },
        { D(auth_user_list_response), "{\"header\":{\"revision\":\"5\"},\"users\":[\"u\\u2028\xc3\xa9\\u0001\\t\"]}" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        assert_string_equal(rt(t[i].d, t[i].json), t[i].json);
}

static void range_request_enums_and_names(void **state)
{
    (void)state;
    /* names are emitted in number order, proto names, zeros omitted */
    assert_string_equal(
        rt(D(range_request), "{\"keys_only\":true,\"sort_target\":\"MOD\",\"sort_order\":\"DESCEND\",\"limit\":\"10\",\"range_end\":\"Zm9w\",\"key\":\"Zm9v\",\"revision\":0}"),
        "{\"key\":\"Zm9v\",\"range_end\":\"Zm9w\",\"limit\":\"10\",\"sort_order\":\"DESCEND\",\"sort_target\":\"MOD\",\"keys_only\":true}");
    /* lowerCamel names, enum numbers, quoted and bare numbers */
    assert_string_equal(rt(D(range_request), "{\"rangeEnd\":\"AA==\",\"sortOrder\":2,\"sortTarget\":4,\"minModRevision\":5,\"countOnly\":false}"),
                        "{\"range_end\":\"AA==\",\"sort_order\":\"DESCEND\",\"sort_target\":\"VALUE\",\"min_mod_revision\":\"5\"}");
    /* an unknown enum number is printed bare */
    assert_string_equal(rt(D(range_request), "{\"sort_order\":9}"), "{\"sort_order\":9}");
    /* camel wins over the proto name, whatever the order (etcd) */
    assert_string_equal(rt(D(range_request), "{\"keys_only\":true,\"keysOnly\":false}"), "{}");
    assert_string_equal(rt(D(range_request), "{\"keysOnly\":true,\"keys_only\":false}"), "{\"keys_only\":true}");
    /* a duplicate key: the last wins */
    assert_string_equal(rt(D(range_request), "{\"limit\":\"1\",\"limit\":2}"), "{\"limit\":\"2\"}");
    /* null leaves a field unset; unknown fields are ignored */
    assert_string_equal(rt(D(range_request), "{\"key\":null,\"limit\":null,\"sort_order\":null,\"x\":{\"a\":[1,{}]},\"serializable\":null}"), "{}");
    assert_string_equal(rt(D(range_request), "null"), "{}");
    assert_string_equal(rt(D(range_request), ""), "{}");
    assert_string_equal(rt(D(range_request), " \n\t "), "{}");
    /* quoted numbers: spaces, negative, "null" (etcd accepts all) */
    assert_string_equal(rt(D(range_request), "{\"limit\":\" 7 \",\"revision\":\"-3\",\"min_create_revision\":\"null\"}"),
                        "{\"limit\":\"7\",\"revision\":\"-3\"}");
    /* bytes: newlines inside base64 are skipped (etcd); escaped key names */
    assert_string_equal(rt(D(range_request), "{\"k\\u0065y\":\"Y\\nQ==\"}"), "{\"key\":\"YQ==\"}");
    /* bytes from an array of numbers, as encoding/json does (etcd) */
    assert_string_equal(rt(D(range_request), "{\"key\":[89,81,61,61]}"), "{\"key\":\"WVE9PQ==\"}");
    /* bytes after the value are ignored (json.Decoder) */
    assert_string_equal(rt(D(range_request), "{\"limit\":1} garbage"), "{\"limit\":\"1\"}");
    assert_string_equal(rt(D(range_request), "{\"limit\":1}{\"limit\":2}"), "{\"limit\":\"1\"}");
}

static void txn_oneofs_and_zero_presence(void **state)
{
    (void)state;
    /* version 0 in the oneof is present and printed; EQUAL is omitted */
    assert_string_equal(
        rt(D(txn_request), "{\"compare\":[{\"key\":\"Zm9v\",\"result\":\"EQUAL\",\"target\":\"VERSION\",\"version\":0},{\"target\":\"CREATE\",\"createRevision\":\"0\",\"result\":\"GREATER\",\"range_end\":\"AA==\"}],"
                             "\"success\":[{\"request_range\":{\"key\":\"Zm9v\"}},{\"requestTxn\":{}}],\"failure\":[{\"requestPut\":{\"key\":\"Zm9v\",\"value\":\"\"}},{\"request_delete_range\":{}}]}"),
        "{\"compare\":[{\"key\":\"Zm9v\",\"version\":\"0\"},{\"result\":\"GREATER\",\"target\":\"CREATE\",\"create_revision\":\"0\",\"range_end\":\"AA==\"}],"
        "\"success\":[{\"request_range\":{\"key\":\"Zm9v\"}},{\"request_txn\":{}}],\"failure\":[{\"request_put\":{\"key\":\"Zm9v\"}},{\"request_delete_range\":{}}]}");
    /* a oneof bytes member at zero is present too */
    assert_string_equal(rt(D(compare), "{\"target\":\"VALUE\",\"value\":\"\"}"), "{\"target\":\"VALUE\",\"value\":\"\"}");
    /* check the wire bytes: version=0 is tag 4 varint 0 */
    struct buf w;
    char err[128];
    buf_init(&w);
    assert_int_equal(pbjson_decode(D(compare), (const uint8_t *)"{\"version\":0,\"result\":0}", 24, &w, err, sizeof err), 0);
    assert_int_equal(w.len, 2);
    assert_int_equal(w.data[0], 4 << 3);
    assert_int_equal(w.data[1], 0);
    buf_free(&w);
    /* null oneof members: a scalar is present at zero, a message absent */
    assert_string_equal(rt(D(compare), "{\"mod_revision\":null}"), "{\"mod_revision\":\"0\"}");
    assert_string_equal(rt(D(compare), "{\"value\":null}"), "{\"value\":\"\"}");
    assert_string_equal(rt(D(request_op), "{\"request_range\":null}"), "{}");
    /* null elements of repeated fields are zero values */
    assert_string_equal(rt(D(watch_create_request), "{\"filters\":[null,1]}"), "{\"filters\":[\"NOPUT\",\"NODELETE\"]}");
    assert_string_equal(rt(D(member_add_request), "{\"peerURLs\":[null]}"), "{\"peerURLs\":[\"\"]}");
    assert_string_equal(rt(D(txn_request), "{\"compare\":[null]}"), "{\"compare\":[{}]}");
    /* present empty messages */
    assert_string_equal(rt(D(request_op), "{\"request_range\":{}}"), "{\"request_range\":{}}");
    assert_string_equal(rt(D(txn_response), "{\"header\":{}}"), "{\"header\":{}}");
}

static void put_watch_lease_requests(void **state)
{
    (void)state;
    assert_string_equal(rt(D(put_request), "{\"key\":\"Zm9v\",\"value\":\"YmFy\",\"lease\":\"0\",\"prev_kv\":true,\"ignoreValue\":false}"),
                        "{\"key\":\"Zm9v\",\"value\":\"YmFy\",\"prev_kv\":true}");
    assert_string_equal(rt(D(watch_request), "{\"create_request\":{\"key\":\"Zm9v\",\"range_end\":\"Zm9w\",\"start_revision\":\"5\",\"filters\":[\"NODELETE\",0],\"prev_kv\":true,\"watch_id\":3,\"progressNotify\":true}}"),
                        "{\"create_request\":{\"key\":\"Zm9v\",\"range_end\":\"Zm9w\",\"start_revision\":\"5\",\"progress_notify\":true,\"filters\":[\"NODELETE\",\"NOPUT\"],\"prev_kv\":true,\"watch_id\":\"3\"}}");
    assert_string_equal(rt(D(watch_request), "{\"cancel_request\":{\"watch_id\":0}}"), "{\"cancel_request\":{}}");
    assert_string_equal(rt(D(watch_request), "{\"progress_request\":{}}"), "{\"progress_request\":{}}");
    assert_string_equal(rt(D(lease_grant_request), "{\"TTL\":60,\"ID\":\"7587\"}"), "{\"TTL\":\"60\",\"ID\":\"7587\"}");
    assert_string_equal(rt(D(lease_keep_alive_request), "{\"ID\":\"-1\"}"), "{\"ID\":\"-1\"}");
    assert_string_equal(rt(D(member_add_request), "{\"peerURLs\":[\"http://a:1\",\"\"],\"isLearner\":true}"),
                        "{\"peerURLs\":[\"http://a:1\",\"\"],\"isLearner\":true}");
    assert_string_equal(rt(D(member_remove_request), "{\"ID\":\"18446744073709551615\"}"), "{\"ID\":\"18446744073709551615\"}");
    assert_string_equal(rt(D(auth_role_grant_permission_request), "{\"name\":\"r\",\"perm\":{\"permType\":\"READ\",\"key\":\"YQ==\"}}"),
                        "{\"name\":\"r\",\"perm\":{\"key\":\"YQ==\"}}");
    assert_string_equal(rt(&v3lockpb__lock_request__descriptor, "{\"name\":\"bA==\",\"lease\":\"5\"}"), "{\"name\":\"bA==\",\"lease\":\"5\"}");
    assert_string_equal(rt(&v3electionpb__leader_key__descriptor, "{\"name\":\"ZQ==\",\"key\":\"aw==\",\"rev\":7,\"lease\":\"9\"}"),
                        "{\"name\":\"ZQ==\",\"key\":\"aw==\",\"rev\":\"7\",\"lease\":\"9\"}");
    assert_string_equal(rt(&mvccpb__event__descriptor, "{\"type\":\"DELETE\",\"kv\":{\"key\":\"YQ==\",\"lease\":\"3\"}}"),
                        "{\"type\":\"DELETE\",\"kv\":{\"key\":\"YQ==\",\"lease\":\"3\"}}");
}

/* Strings through a user name (string field), escaped as Go 1.19 does. */
static void go_escaping(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } t[] = {
        { "plain", 5, "\"plain\"" },
        { "<a&b>", 5, "\"\\u003ca\\u0026b\\u003e\"" },
        { "\"\\/", 3, "\"\\\"\\\\/\"" },
        { "\n\r\t\b\f", 5, "\"\\n\\r\\t\\u0008\\u000c\"" },
        { "\x01\x1f\x7f", 3, "\"\\u0001\\u001f\x7f\"" },
        { "a\0b", 3, "\"a\\u0000b\"" },
        { "\xe2\x80\xa8\xe2\x80\xa9", 6, "\"\\u2028\\u2029\"" },
        { "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"" },
        { "\xff", 1, "\"\\ufffd\"" },
        { "a\xc3", 2, "\"a\\ufffd\"" },
        { "\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"" },     /* UTF-8 surrogate */
        { "\xc0\xaf", 2, "\"\\ufffd\\ufffd\"" },                 /* overlong */
        { "\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\"" }, /* > U+10FFFF */
        { "", 0, "\"\"" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct buf b;
        buf_init(&b);
        json_put_string(&b, t[i].in, t[i].n);
        buf_append(&b, "", 1);
        assert_string_equal((char *)b.data, t[i].out);
        buf_free(&b);
    }
    /* decoding: escapes, surrogate pairs, lone surrogates, bad UTF-8 */
    assert_string_equal(rt(D(auth_user_add_request), "{\"name\":\"\\u00e9\\ud83d\\ude00\\ud800x\\/\"}"),
                        "{\"name\":\"\xc3\xa9\xf0\x9f\x98\x80\xef\xbf\xbdx/\"}");
    assert_string_equal(rt(D(auth_user_add_request), "{\"name\":\"a\xff\xc3\"}"), "{\"name\":\"a\xef\xbf\xbd\xef\xbf\xbd\"}");
    assert_string_equal(rt(D(auth_user_add_request), "{\"name\":\"u\\u2028\\u00e9\\u0001\\t\"}"),
                        "{\"name\":\"u\\u2028\xc3\xa9\\u0001\\t\"}"); /* etcd */
}

static void error_texts(void **state)
{
    (void)state;
    static const struct {
        const ProtobufCMessageDescriptor *d;
        const char *in, *err;
    } t[] = {
        /* all from etcd 3.4.23's gateway */
        { D(range_request), "{\"sort_order\":\"BAD\"}", "unknown value \"BAD\" for enum etcdserverpb.RangeRequest_SortOrder" },
        { D(range_request), "{\"sort_order\":\"1\"}", "unknown value \"1\" for enum etcdserverpb.RangeRequest_SortOrder" },
        { D(range_request), "{\"sort_order\":true}", "json: cannot unmarshal bool into Go value of type etcdserverpb.RangeRequest_SortOrder" },
        { D(range_request), "{\"sort_order\":1.5}", "json: cannot unmarshal number 1.5 into Go value of type etcdserverpb.RangeRequest_SortOrder" },
        { D(txn_request), "{\"compare\":[{\"key\":\"Zm9v\",\"result\":\"BOGUS\"}]}", "unknown value \"BOGUS\" for enum etcdserverpb.Compare_CompareResult" },
        { D(txn_request), "{\"compare\":[{\"target\":\"BOGUS\"}]}", "unknown value \"BOGUS\" for enum etcdserverpb.Compare_CompareTarget" },
        { D(txn_request), "{\"compare\":{\"key\":\"Zm9v\"}}", "json: cannot unmarshal object into Go value of type []json.RawMessage" },
        { D(range_request), "{\"limit\":\"abc\"}", "invalid character 'a' looking for beginning of value" },
        { D(range_request), "{\"limit\":1.5}", "json: cannot unmarshal number 1.5 into Go value of type int64" },
        { D(range_request), "{\"limit\":1e3}", "json: cannot unmarshal number 1e3 into Go value of type int64" },
        { D(range_request), "{\"limit\":99999999999999999999}", "json: cannot unmarshal number 99999999999999999999 into Go value of type int64" },
        { D(range_request), "{\"limit\":\"99999999999999999999\"}", "json: cannot unmarshal number 99999999999999999999 into Go value of type int64" },
        { D(range_request), "{\"limit\":\"\"}", "unexpected end of JSON input" },
        { D(range_request), "{\"limit\":\"1x\"}", "invalid character 'x' after top-level value" },
        { D(range_request), "{\"limit\":\"true\"}", "json: cannot unmarshal bool into Go value of type int64" },
        { D(range_request), "{\"limit\":true}", "json: cannot unmarshal bool into Go value of type int64" },
        { D(range_request), "{\"limit\":[1]}", "json: cannot unmarshal array into Go value of type int64" },
        { D(range_request), "{\"key\":\"Zm9\"}", "illegal base64 data at input byte 0" },
        { D(range_request), "{\"key\":\"Zm9v!\"}", "illegal base64 data at input byte 4" },
        { D(range_request), "{\"key\":\"YQ=\"}", "illegal base64 data at input byte 3" },
        { D(range_request), "{\"key\":\"YQ\"}", "illegal base64 data at input byte 0" },
        { D(range_request), "{\"key\":\"YQ=x\"}", "illegal base64 data at input byte 2" },
        { D(range_request), "{\"key\":123}", "json: cannot unmarshal number into Go value of type []uint8" },
        { D(range_request), "{\"serializable\":\"true\"}", "json: cannot unmarshal string into Go value of type bool" },
        { D(range_request), "{\"serializable\":1}", "json: cannot unmarshal number into Go value of type bool" },
        { D(range_request), "[1]", "json: cannot unmarshal array into Go value of type map[string]json.RawMessage" },
        { D(range_request), "\"str\"", "json: cannot unmarshal string into Go value of type map[string]json.RawMessage" },
        { D(range_request), "5", "json: cannot unmarshal number into Go value of type map[string]json.RawMessage" },
        { D(range_request), "{\"key\":\"Zm9v\",", "unexpected EOF" },
        { D(range_request), "{\"key\":\"Zm9v\"", "unexpected EOF" },
        { D(range_request), "x", "invalid character 'x' looking for beginning of value" },
        { D(range_request), "{\"key\":\"YQ==\" \"x\"}", "invalid character '\"' after object key:value pair" },
        { D(range_request), "{\"key\" 1}", "invalid character '1' after object key" },
        { D(range_request), "{1}", "invalid character '1' looking for beginning of object key string" },
        { D(range_request), "[1,]", "invalid character ']' looking for beginning of value" },
        { D(range_request), "{\"a\":tru}", "invalid character '}' in literal true (expecting 'e')" },
        { D(range_request), "{\"a\":-}", "invalid character '}' in numeric literal" },
        { D(range_request), "{\"a\":1.}", "invalid character '}' after decimal point in numeric literal" },
        { D(range_request), "{\"a\":1e}", "invalid character '}' in exponent of numeric literal" },
        { D(range_request), "{\"a\":\"\\x\"}", "invalid character 'x' in string escape code" },
        { D(range_request), "{\"a\":\"\\u12g4\"}", "invalid character 'g' in \\u hexadecimal character escape" },
        { D(range_request), "\xc3\xa9", "invalid character '\xc3\x83' looking for beginning of value" },
        { D(range_request), "{\"a\":\"\x01\"}", "invalid character '\\x01' in string literal" },
        { D(range_request), "{\"a\":[1 2]}", "invalid character '2' after array element" },
        { D(txn_request), "{\"success\":[{\"request_range\":{\"key\":\"YQ==\"}}],\"compare\":[{\"key\":\"YQ==\",\"version\":\"x\",\"result\":\"BAD\"}]}", "unknown value \"BAD\" for enum etcdserverpb.Compare_CompareResult" },
        { D(txn_request), "{\"compare\":[{\"key\":\"YQ==\",\"version\":\"x\",\"range_end\":5}]}", "json: cannot unmarshal number into Go value of type []uint8" },
        { D(range_request), "{\"key\":[300]}", "json: cannot unmarshal number 300 into Go value of type uint8" },
        { D(range_request), "{\"key\":[\"a\"]}", "json: cannot unmarshal string into Go value of type uint8" },
        { D(range_request), "5x", "json: cannot unmarshal number into Go value of type map[string]json.RawMessage" },
        { D(range_request), "{\"sort_order\":\"DESC\\u0045ND\"}", "unknown value \"DESC\\\\u0045ND\" for enum etcdserverpb.RangeRequest_SortOrder" },
        { D(range_request), "{\"sort_order\":\"\\\"x\"}", "unknown value \"\\\\\\\"x\" for enum etcdserverpb.RangeRequest_SortOrder" },
        { D(range_request), "{\"limit\":\"\\u0031\"}", "invalid character '\\\\' looking for beginning of value" },
        { D(range_request), "{\"limit\":\"\t5\"}", "invalid character '\\t' in string literal" },
        { D(member_remove_request), "{\"ID\":\"-0\"}", "json: cannot unmarshal number -0 into Go value of type uint64" },
        { D(range_request), "{\"revision\":1e400}", "json: cannot unmarshal number 1e400 into Go value of type int64" },
        { D(range_request), "{\"limit\":-0,\"key\":[89,null,61,61],\"x\xff\":1}", "" },
        /* by Go's rules, not checked against etcd */
        { D(range_request), "{\"limit\":\"-\"}", "invalid character ' ' in numeric literal" },
        { D(range_request), "{\"header\":\"x\"}", "" }, /* RangeRequest has no header: ignored */
        { D(range_response), "{\"header\":\"x\"}", "json: cannot unmarshal string into Go value of type map[string]json.RawMessage" },
        { D(range_response), "{\"kvs\":5}", "json: cannot unmarshal number into Go value of type []json.RawMessage" },
        { D(range_response), "{\"kvs\":[5]}", "json: cannot unmarshal number into Go value of type map[string]json.RawMessage" },
        { D(member_remove_request), "{\"ID\":-1}", "json: cannot unmarshal number -1 into Go value of type uint64" },
        { D(watch_create_request), "{\"filters\":[\"NOPE\"]}", "unknown value \"NOPE\" for enum etcdserverpb.WatchCreateRequest_FilterType" },
        { D(auth_user_add_request), "{\"name\":5}", "json: cannot unmarshal number into Go value of type string" },
        { D(auth_role_grant_permission_request), "{\"perm\":{\"permType\":\"X\\\"\"}}", "unknown value \"X\\\\\\\"\" for enum authpb.Permission_Type" },
        { D(range_request), "{\"key\":[300]}", "json: cannot unmarshal number 300 into Go value of type uint8" },
        { D(range_request), "'", "invalid character '\\'' looking for beginning of value" },
        /* a non-oneof error wins over an earlier oneof error (jsonpb order) */
        { D(compare), "{\"version\":\"x\",\"range_end\":5}", "json: cannot unmarshal number into Go value of type []uint8" },
        { D(compare), "{\"version\":\"x\",\"range_end\":\"\"}", "invalid character 'x' looking for beginning of value" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        const char *e = derr(t[i].d, t[i].in);
        if (strcmp(e, t[i].err) != 0)
            fail_msg("%s: got [%s] want [%s]", t[i].in, e, t[i].err);
    }
}

/* Every prefix of a valid body is "unexpected EOF" or a valid shorter
 * value; every byte flip either decodes or fails cleanly. */
static void truncated_and_mutated_inputs(void **state)
{
    (void)state;
    const char *body = "{\"compare\":[{\"key\":\"Zm9v\",\"version\":\"1\",\"result\":\"LESS\"}],"
                       "\"success\":[{\"request_put\":{\"key\":\"YQ==\",\"value\":\"\\u00e9\",\"lease\":-5}}],"
                       "\"failure\":[{\"request_txn\":{\"success\":[{\"request_range\":{\"limit\":1e0}}]}}]}";
    size_t n = strlen(body);
    for (size_t i = 1; i < n; i++) {
        const char *e = derr_n(D(txn_request), body, i);
        if (strcmp(e, "unexpected EOF") != 0)
            fail_msg("prefix %zu: %s", i, e);
    }
    char *m = test_malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        static const char flips[] = "\0\"{}[],:\\x0-\xff";
        for (size_t k = 0; k < sizeof flips - 1; k++) {
            memcpy(m, body, n + 1);
            m[i] = flips[k];
            (void)derr_n(D(txn_request), m, n);
        }
    }
    test_free(m);
}

static void hostile_inputs(void **state)
{
    (void)state;
    enum { N = 200000 };
    char *p = test_malloc(N + 1);
    /* deep arrays: stopped at JSON_MAX_DEPTH */
    memset(p, '[', N);
    assert_string_equal(derr_n(D(range_request), p, N), "invalid character '[' exceeded max depth");
    /* depth 64 is fine, 65 is not */
    memset(p, '[', 64);
    memset(p + 64, ']', 64);
    assert_string_equal(derr_n(D(range_request), p, 128),
                        "json: cannot unmarshal array into Go value of type map[string]json.RawMessage");
    /* deep messages through the recursive Txn type */
    struct buf b;
    buf_init(&b);
    for (int i = 0; i < 40; i++)
        buf_append(&b, "{\"success\":[{\"request_txn\":", 27);
    buf_append(&b, "{}", 2);
    for (int i = 0; i < 40; i++)
        buf_append(&b, "}]}", 3);
    assert_string_equal(derr_n(D(txn_request), (char *)b.data, b.len), "invalid character '[' exceeded max depth");
    buf_free(&b);
    buf_init(&b);
    for (int i = 0; i < 15; i++)
        buf_append(&b, "{\"success\":[{\"request_txn\":", 27);
    buf_append(&b, "{}", 2);
    for (int i = 0; i < 15; i++)
        buf_append(&b, "}]}", 3);
    buf_append(&b, "", 1);
    const char *out = rt(D(txn_request), (char *)b.data);
    assert_true(strncmp(out, "{\"success\":[{\"request_txn\":{\"success\":", 38) == 0);
    buf_free(&b);
    /* a huge number and a long unknown string */
    p[0] = '{';
    memcpy(p + 1, "\"limit\":", 8);
    memset(p + 9, '9', N - 10);
    p[N - 1] = '}';
    assert_true(strncmp(derr_n(D(range_request), p, N), "json: cannot unmarshal number 999", 33) == 0);
    memcpy(p + 1, "\"xxxxx\":\"", 9);
    memset(p + 10, '\xff', N - 12);
    p[N - 2] = '"';
    assert_string_equal(derr_n(D(range_request), p, N), "");
    /* many members */
    for (size_t i = 1; i + 6 < N; i += 6)
        memcpy(p + i, "\"a\":1,", 6);
    memcpy(p + N - 7, "\"a\":1}", 6);
    assert_string_equal(derr_n(D(range_request), p, N - 1), "");
    /* no room for the error text */
    struct buf w0;
    buf_init(&w0);
    assert_int_equal(pbjson_decode(D(txn_request), (const uint8_t *)"{\"compare\":[{\"version\":\"x\"}]}", 31, &w0, NULL, 0), -1);
    buf_free(&w0);
    /* NUL bytes and control bytes */
    assert_string_equal(derr_n(D(range_request), "\0", 1), "invalid character '\\x00' looking for beginning of value");
    assert_string_equal(derr_n(D(range_request), "{\"key\":\"\0\"}", 10), "invalid character '\\x00' in string literal");
    test_free(p);
    /* wire that does not unpack */
    struct buf j;
    buf_init(&j);
    assert_int_equal(pbjson_encode(D(range_response), (const uint8_t *)"\x0a\x05" "ab", 4, &j), -1);
    assert_int_equal(pbjson_encode(D(range_response), (const uint8_t *)"\xff\xff\xff", 3, &j), -1);
    assert_int_equal(j.len, 0);
    buf_free(&j);
}

/* Random token soup from JSON-ish pieces: decode, encode what decodes and
 * split, without crashes or leaks (run under ASan too). */
static void random_token_soup(void **state)
{
    (void)state;
    static const char *tok[] = {
        "{", "}", "[", "]", ",", ":", "\"compare\"", "\"success\"", "\"request_txn\"",
        "\"request_range\"", "\"key\"", "\"version\"", "\"result\"", "\"LESS\"", "\"YQ==\"",
        "\"-7\"", "1", "-0", "1.5e3", "true", "null", "\"\\u00e9\"", "\"\xff\"", " ", "\"range_end\"",
        "\"failure\"", "\"request_put\"", "\"lease\"", "\"target\"", "\"MOD\"", "\"\\ud800\"",
    };
    uint64_t r = 0x9e3779b97f4a7c15ull;
    struct buf in, w, j;
    buf_init(&in);
    buf_init(&w);
    buf_init(&j);
    for (int iter = 0; iter < 20000; iter++) {
        in.len = w.len = j.len = 0;
        int n = 1 + iter % 40;
        for (int k = 0; k < n; k++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            const char *t = tok[r % (sizeof tok / sizeof tok[0])];
            buf_append(&in, t, strlen(t));
        }
        char err[128];
        if (pbjson_decode(D(txn_request), in.data, in.len, &w, err, sizeof err) == 0)
            assert_int_equal(pbjson_encode(D(txn_request), w.data, w.len, &j), 0);
        else
            assert_true(err[0] != 0);
        struct json_split sp;
        size_t end, pos = 0;
        json_split_init(&sp);
        while (pos < in.len && json_split_next(&sp, in.data + pos, in.len - pos, &end) == 1) {
            assert_true(end > 0 && end <= in.len - pos);
            pos += end;
            json_split_init(&sp);
        }
    }
    buf_free(&in);
    buf_free(&w);
    buf_free(&j);
}

/* Feeds @body one byte at a time; returns the values cut, joined by '|'. */
static void split_bytewise(const char *body, const char *want, int want_rc)
{
    size_t n = strlen(body), have = 0, pos = 0, end;
    char got[512] = "";
    struct json_split s;
    int rc = 0;
    json_split_init(&s);
    while (have < n) {
        have++;
        while ((rc = json_split_next(&s, (const uint8_t *)body + pos, have - pos, &end)) == 1) {
            strncat(got, body + pos, end);
            strcat(got, "|");
            pos += end;
            json_split_init(&s);
        }
        if (rc < 0)
            break;
    }
    assert_string_equal(got, want);
    assert_int_equal(rc, want_rc);
}

static void splitter(void **state)
{
    (void)state;
    split_bytewise("{\"a\":\"}{\\\"\"} [1,[2]]\n{}", "{\"a\":\"}{\\\"\"}| [1,[2]]|\n{}|", 0);
    /* top-level scalars end at the next byte */
    split_bytewise("12 \"x\" true null {}", "12| \"x\"| true| null| {}|", 0);
    split_bytewise("12", "", 0);
    split_bytewise("  ", "", 0);
    split_bytewise("{\"a\":1}x{", "{\"a\":1}|", -1);
    split_bytewise("{]", "", -1);
    split_bytewise("{\"create_request\":{\"key\":\"YQ==\"}}{\"cancel_request\":{\"watch_id\":1}}",
                   "{\"create_request\":{\"key\":\"YQ==\"}}|{\"cancel_request\":{\"watch_id\":1}}|", 0);
    /* depth limit */
    char deep[JSON_MAX_DEPTH + 2];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = 0;
    split_bytewise(deep, "", -1);
    /* whole-buffer calls give the same cut */
    struct json_split s;
    size_t end;
    json_split_init(&s);
    assert_int_equal(json_split_next(&s, (const uint8_t *)" {} {}", 6, &end), 1);
    assert_int_equal(end, 3);
}

/* ---- field order ---- */

struct pfield {
    char msg[128];
    unsigned num;
};

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    p[n] = 0;
    fclose(f);
    return p;
}

static void scpy(char *d, size_t cap, const char *s)
{
    size_t l = strlen(s);
    if (l >= cap)
        l = cap - 1;
    memcpy(d, s, l);
    d[l] = 0;
}

/* Reads a .proto and appends (message, field number) in declaration order. */
static size_t parse_proto(const char *src, struct pfield *out, size_t n, size_t cap)
{
    char tok[8][128]; /* the last tokens, tok[0] newest */
    char pkg[64] = "";
    char stack[16][64];
    int kinds[16], depth = 0; /* kind 1 message, 2 oneof, 0 other */
    memset(tok, 0, sizeof tok);
    const char *p = src;
    while (*p) {
        if (p[0] == '/' && p[1] == '/') {
            while (*p && *p != '\n')
                p++;
            continue;
        }
        if (p[0] == '/' && p[1] == '*') {
            char *e = strstr(p + 2, "*/");
            p = e ? e + 2 : p + strlen(p);
            continue;
        }
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            p++;
            continue;
        }
        char t[128];
        size_t k = 0;
        if (*p == '"') {
            t[k++] = *p++;
            while (*p && *p != '"' && k < 120)
                t[k++] = *p++;
            if (*p)
                p++;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                   (*p >= '0' && *p <= '9') || *p == '.') {
            while (((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                    (*p >= '0' && *p <= '9') || *p == '.') && k < 120)
                t[k++] = *p++;
        } else {
            t[k++] = *p++;
        }
        t[k] = 0;
        memmove(tok[1], tok[0], sizeof tok - sizeof tok[0]);
        snprintf(tok[0], sizeof tok[0], "%s", t);
        if (!strcmp(t, ";") && !strcmp(tok[2], "package"))
            scpy(pkg, sizeof pkg, tok[1]);
        if (!strcmp(t, "{")) {
            assert_true(depth < 16);
            kinds[depth] = !strcmp(tok[2], "message") ? 1 : !strcmp(tok[2], "oneof") ? 2 : 0;
            scpy(stack[depth], sizeof stack[depth], tok[1]);
            depth++;
        } else if (!strcmp(t, "}")) {
            if (depth > 0)
                depth--;
        } else if ((!strcmp(t, ";") || !strcmp(t, "[")) && !strcmp(tok[2], "=") && depth > 0 &&
                   kinds[depth - 1] && tok[1][0] >= '0' && tok[1][0] <= '9' &&
                   strcmp(tok[4], "option")) {
            assert_true(n < cap);
            /* the message: the innermost kind-1 entry and its parents */
            char name[128];
            scpy(name, sizeof name, pkg);
            int top = depth - 1;
            while (kinds[top] != 1)
                top--;
            for (int i = 0; i <= top; i++) {
                size_t l = strlen(name);
                scpy(name + l, sizeof name - l, ".");
                scpy(name + l + 1, sizeof name - l - 1, stack[i]);
            }
            scpy(out[n].msg, sizeof out[n].msg, name);
            out[n].num = (unsigned)atoi(tok[1]);
            n++;
        }
    }
    return n;
}

static void check_message(const ProtobufCMessageDescriptor *d, const struct pfield *pf, size_t n,
                          const ProtobufCMessageDescriptor **seen, size_t *nseen)
{
    for (size_t i = 0; i < *nseen; i++)
        if (seen[i] == d)
            return;
    assert_true(*nseen < 512);
    seen[(*nseen)++] = d;
    unsigned last = 0, count = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(pf[i].msg, d->name) != 0)
            continue;
        if (pf[i].num <= last)
            fail_msg("%s: field %u declared after field %u", d->name, pf[i].num, last);
        last = pf[i].num;
        count++;
    }
    if (count != d->n_fields)
        fail_msg("%s: %u fields in the .proto, %u in the descriptor", d->name, count, d->n_fields);
    for (unsigned i = 0; i < d->n_fields; i++) {
        if (i > 0)
            assert_true(d->fields[i - 1].id < d->fields[i].id);
        if (d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE)
            check_message(d->fields[i].descriptor, pf, n, seen, nseen);
    }
}

static void fields_declared_in_number_order(void **state)
{
    (void)state;
    static const char *files[] = { "etcdserverpb/rpc.proto", "mvccpb/kv.proto", "authpb/auth.proto",
                                   "v3lockpb/v3lock.proto", "v3electionpb/v3election.proto" };
    static const ProtobufCServiceDescriptor *svcs[] = {
        &etcdserverpb__kv__descriptor, &etcdserverpb__watch__descriptor,
        &etcdserverpb__lease__descriptor, &etcdserverpb__cluster__descriptor,
        &etcdserverpb__maintenance__descriptor, &etcdserverpb__auth__descriptor,
        &v3lockpb__lock__descriptor, &v3electionpb__election__descriptor,
    };
    /* the repo root: up from the test binary until proto/ is found */
    char root[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", root, sizeof root - 1);
    assert_true(l > 0);
    root[l] = 0;
    char path[PATH_MAX + 64];
    char *src = NULL;
    for (int up = 0; up < 6 && !src; up++) {
        snprintf(root, sizeof root, "%s", dirname(root));
        snprintf(path, sizeof path, "%s/proto/%s", root, files[0]);
        src = slurp(path);
    }
    assert_non_null(src);
    free(src);
    static struct pfield pf[2048];
    size_t n = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/proto/%s", root, files[i]);
        src = slurp(path);
        assert_non_null(src);
        n = parse_proto(src, pf, n, sizeof pf / sizeof pf[0]);
        free(src);
    }
    assert_true(n > 100);
    static const ProtobufCMessageDescriptor *seen[512];
    size_t nseen = 0;
    for (size_t i = 0; i < sizeof svcs / sizeof svcs[0]; i++)
        for (unsigned j = 0; j < svcs[i]->n_methods; j++) {
            check_message(svcs[i]->methods[j].input, pf, n, seen, &nseen);
            check_message(svcs[i]->methods[j].output, pf, n, seen, &nseen);
        }
    assert_true(nseen > 60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(etcd_responses_round_trip),
        cmocka_unit_test(range_request_enums_and_names),
        cmocka_unit_test(txn_oneofs_and_zero_presence),
        cmocka_unit_test(put_watch_lease_requests),
        cmocka_unit_test(go_escaping),
        cmocka_unit_test(error_texts),
        cmocka_unit_test(truncated_and_mutated_inputs),
        cmocka_unit_test(hostile_inputs),
        cmocka_unit_test(random_token_soup),
        cmocka_unit_test(splitter),
        cmocka_unit_test(fields_declared_in_number_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

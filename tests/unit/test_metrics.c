/* Metric primitives and the text exposition format (src/metrics). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "apply/apply.h"
#include "core/err.h"
#include "metrics/metrics_int.h"

static char *text(struct buf *b)
{
    buf_append(b, "", 1);
    return (char *)b->data;
}

static void check_fmt(double v, const char *want)
{
    char out[32];
    metrics_format_double(out, v);
    if (strcmp(out, want) != 0)
        fail_msg("format(%.17g) = %s, want %s", v, out, want);
}

/* The strings client_golang prints (strconv.FormatFloat 'g', -1), as seen
 * in etcd 3.4's /metrics. */
static void test_format_double(void **state)
{
    (void)state;
    check_fmt(0, "0");
    check_fmt(1, "1");
    check_fmt(-1.5, "-1.5");
    check_fmt(0.1, "0.1");
    check_fmt(0.001, "0.001");
    check_fmt(0.0001, "0.0001");
    check_fmt(0.00001, "1e-05");
    check_fmt(20480, "20480");
    check_fmt(123456, "123456");
    check_fmt(1e6, "1e+06");
    check_fmt(1234567, "1.234567e+06");
    check_fmt(2147483648.0, "2.147483648e+09");
    check_fmt(1.79570084728e+09, "1.79570084728e+09");
    check_fmt(18446744073709551615.0, "1.8446744073709552e+19");
    check_fmt(0.0023379330000000004, "0.0023379330000000004");
    check_fmt(INFINITY, "+Inf");
    check_fmt(-INFINITY, "-Inf");
    check_fmt(NAN, "NaN");
}

static void test_histogram_buckets(void **state)
{
    struct metrics_histogram h;
    struct buf b = {NULL, 0, 0};
    (void)state;

    assert_int_equal(metrics_histogram_init_exp(&h, 0.001, 2, 14, 1e9), 0);
    assert_int_equal(h.nb, 14);
    /* the bound is inclusive (le) */
    metrics_histogram_observe(&h, 1000000);       /* 1 ms: le=0.001 */
    metrics_histogram_observe(&h, 1000001);       /* just above: 0.002 */
    metrics_histogram_observe(&h, 8192000000ull); /* 8.192 s: last bucket */
    metrics_histogram_observe(&h, 10000000000ull); /* 10 s: +Inf only */
    metrics_write_histogram(&b, "x_seconds", "Help.", &h);
    const char *want =
        "# HELP x_seconds Help.\n"
        "# TYPE x_seconds histogram\n"
        "x_seconds_bucket{le=\"0.001\"} 1\n"
        "x_seconds_bucket{le=\"0.002\"} 2\n"
        "x_seconds_bucket{le=\"0.004\"} 2\n"
        "x_seconds_bucket{le=\"0.008\"} 2\n"
        "x_seconds_bucket{le=\"0.016\"} 2\n"
        "x_seconds_bucket{le=\"0.032\"} 2\n"
        "x_seconds_bucket{le=\"0.064\"} 2\n"
        "x_seconds_bucket{le=\"0.128\"} 2\n"
        "x_seconds_bucket{le=\"0.256\"} 2\n"
        "x_seconds_bucket{le=\"0.512\"} 2\n"
        "x_seconds_bucket{le=\"1.024\"} 2\n"
        "x_seconds_bucket{le=\"2.048\"} 2\n"
        "x_seconds_bucket{le=\"4.096\"} 2\n"
        "x_seconds_bucket{le=\"8.192\"} 3\n"
        "x_seconds_bucket{le=\"+Inf\"} 4\n"
        "x_seconds_sum 18.194000001\n"
        "x_seconds_count 4\n";
    assert_string_equal(text(&b), want);
    buf_free(&b);
}

static void test_histogram_bad_layout(void **state)
{
    struct metrics_histogram h;
    (void)state;
    assert_int_equal(metrics_histogram_init_exp(&h, 0, 2, 4, 1), -EINVAL);
    assert_int_equal(metrics_histogram_init_exp(&h, 1, 1, 4, 1), -EINVAL);
    assert_int_equal(metrics_histogram_init_exp(&h, 1, 2, 0, 1), -EINVAL);
    assert_int_equal(
        metrics_histogram_init_exp(&h, 1, 2, METRICS_MAX_BUCKETS + 1, 1),
        -EINVAL);
}

static void test_label_and_help_escaping(void **state)
{
    struct buf b = {NULL, 0, 0};
    struct metrics_label l[2] = {{"a", "q\"b\\s\nn"}, {"b", "plain"}};
    (void)state;

    metrics_write_header(&b, "m_total", "back\\slash \"quote\"\nline",
                         "counter");
    metrics_write_sample(&b, "m_total", NULL, l, 2, 3);
    metrics_write_sample(&b, "m_total", NULL, NULL, 0, 0.5);
    assert_string_equal(text(&b),
                        "# HELP m_total back\\\\slash \"quote\"\\nline\n"
                        "# TYPE m_total counter\n"
                        "m_total{a=\"q\\\"b\\\\s\\nn\",b=\"plain\"} 3\n"
                        "m_total 0.5\n");
    buf_free(&b);
}

static struct metrics_grpc_method *method(int m)
{
    assert_true(m > 0 && m <= metrics__nmethods);
    return &metrics__methods[m - 1];
}

static void test_grpc_counters(void **state)
{
    (void)state;
    int put = metrics_grpc_started("/etcdserverpb.KV/Put", "3.5");
    int watch = metrics_grpc_started("/etcdserverpb.Watch/Watch", "");
    assert_int_equal(metrics_grpc_started("/nope.Svc/Put", "3.5"), 0);
    assert_int_equal(metrics_grpc_started("/etcdserverpb.KV/Pu", "3.5"), 0);
    assert_string_equal(method(put)->method, "Put");
    assert_string_equal(method(put)->service, "etcdserverpb.KV");
    assert_string_equal(method(put)->type, "unary");
    assert_string_equal(method(watch)->type, "bidi_stream");

    uint64_t rx = metrics_counter_get(&metrics__etcd.grpc_received_bytes);
    metrics_grpc_msg_received(put, 10);
    metrics_grpc_msg_sent(put, 7);
    metrics_grpc_msg_received(0, 5); /* uncounted method: bytes still count */
    metrics_grpc_handled(put, GRPC_OK);
    metrics_grpc_handled(put, GRPC_INVALID_ARGUMENT);
    metrics_grpc_handled(put, 99); /* out of range: Unknown */
    metrics_grpc_handled(0, GRPC_OK);
    assert_int_equal(metrics_counter_get(&metrics__etcd.grpc_received_bytes),
                     rx + 15);
    assert_int_equal(metrics_counter_get(&method(put)->started), 1);
    assert_int_equal(metrics_counter_get(&method(put)->received), 1);
    assert_int_equal(metrics_counter_get(&method(put)->sent), 1);
    assert_int_equal(metrics_counter_get(&method(put)->handled[GRPC_OK]), 1);
    assert_int_equal(
        metrics_counter_get(&method(put)->handled[GRPC_INVALID_ARGUMENT]), 1);
    assert_int_equal(metrics_counter_get(&method(put)->handled[GRPC_UNKNOWN]),
                     1);
    assert_string_equal(metrics__code_names[GRPC_INVALID_ARGUMENT],
                        "InvalidArgument");
    assert_string_equal(metrics__code_names[GRPC_CANCELLED], "Canceled");

    /* client_api_version: "unknown" when absent; bounded table */
    struct metrics_client_requests *u = &metrics__etcd.requests[0];
    struct metrics_client_requests *s = &metrics__etcd.requests[1];
    assert_string_equal(s->version[0], "unknown");
    assert_string_equal(u->version[0], "3.5");
    char v[16];
    for (int i = 0; i < METRICS_MAX_VERSIONS + 3; i++) {
        snprintf(v, sizeof v, "9.%d", i);
        metrics_grpc_started("/etcdserverpb.KV/Range", v);
    }
    assert_int_equal(u->used, METRICS_MAX_VERSIONS);
    assert_int_equal(metrics_counter_get(&u->other), 4);
}

/* Packs a TxnResponse whose branch ran a range, a put and a nested txn
 * that deleted. */
static void test_txn_op_counts(void **state)
{
    (void)state;
    Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    Etcdserverpb__PutResponse pr = ETCDSERVERPB__PUT_RESPONSE__INIT;
    Etcdserverpb__DeleteRangeResponse dr =
        ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
    Etcdserverpb__ResponseOp o1 = ETCDSERVERPB__RESPONSE_OP__INIT,
                             o2 = ETCDSERVERPB__RESPONSE_OP__INIT,
                             o3 = ETCDSERVERPB__RESPONSE_OP__INIT,
                             o4 = ETCDSERVERPB__RESPONSE_OP__INIT;
    Etcdserverpb__TxnResponse inner = ETCDSERVERPB__TXN_RESPONSE__INIT,
                              outer = ETCDSERVERPB__TXN_RESPONSE__INIT;
    Etcdserverpb__ResponseOp *inner_ops[1] = {&o4};
    Etcdserverpb__ResponseOp *outer_ops[3] = {&o1, &o2, &o3};
    uint8_t packed[256];

    o1.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
    o1.response_range = &rr;
    o2.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
    o2.response_put = &pr;
    o4.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
    o4.response_delete_range = &dr;
    inner.n_responses = 1;
    inner.responses = inner_ops;
    o3.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
    o3.response_txn = &inner;
    outer.succeeded = 1;
    outer.n_responses = 3;
    outer.responses = outer_ops;
    size_t n = etcdserverpb__txn_response__pack(&outer, packed);

    struct metrics_etcd *e = &metrics__etcd;
    uint64_t r0 = metrics_counter_get(&e->range), p0 = metrics_counter_get(&e->put),
             d0 = metrics_counter_get(&e->del), t0 = metrics_counter_get(&e->txn);
    metrics_write_applied(APPLY_TXN, packed, n);
    assert_int_equal(metrics_counter_get(&e->range), r0 + 1);
    assert_int_equal(metrics_counter_get(&e->put), p0 + 1);
    assert_int_equal(metrics_counter_get(&e->del), d0 + 1);
    assert_int_equal(metrics_counter_get(&e->txn), t0 + 1);

    /* the same response unpacked (a read-only txn on the loop) */
    metrics_txn_read(&outer);
    assert_int_equal(metrics_counter_get(&e->del), d0 + 2);
    assert_int_equal(metrics_counter_get(&e->txn), t0 + 2);

    /* one op is not a txn for etcd's counter */
    outer.n_responses = 1;
    n = etcdserverpb__txn_response__pack(&outer, packed);
    metrics_write_applied(APPLY_TXN, packed, n);
    assert_int_equal(metrics_counter_get(&e->range), r0 + 3);
    assert_int_equal(metrics_counter_get(&e->txn), t0 + 2);

    /* garbage is not counted at all */
    uint8_t bad[3] = {0x1a, 0x7f, 0x00};
    metrics_write_applied(APPLY_TXN, bad, sizeof bad);
    assert_int_equal(metrics_counter_get(&e->range), r0 + 3);

    metrics_write_applied(APPLY_PUT, NULL, 0);
    metrics_write_applied(APPLY_DELETE_RANGE, NULL, 0);
    assert_int_equal(metrics_counter_get(&e->put), p0 + 3);
    assert_int_equal(metrics_counter_get(&e->del), d0 + 3);
}

static void test_proposals(void **state)
{
    struct metrics_etcd *e = &metrics__etcd;
    (void)state;
    metrics_proposal_submitted();
    metrics_proposal_submitted();
    assert_int_equal(metrics_gauge_get(&e->proposals_pending), 2);
    metrics_proposal_done(0);
    metrics_proposal_done(CAIRN_ELEASENOTFOUND); /* committed, failed apply */
    assert_int_equal(metrics_gauge_get(&e->proposals_pending), 0);
    assert_int_equal(metrics_counter_get(&e->proposals_failed), 0);
    metrics_proposal_submitted();
    metrics_proposal_done(CAIRN_ESTORE);
    assert_int_equal(metrics_counter_get(&e->proposals_failed), 1);
    /* slow apply: etcd's 100 ms */
    metrics_apply_observe(metrics_now_ns());
    assert_int_equal(metrics_counter_get(&e->slow_apply), 0);
    metrics_apply_observe(metrics_now_ns() - 200 * 1000000LL);
    assert_int_equal(metrics_counter_get(&e->slow_apply), 1);
    metrics_proposal_submitted();
    metrics_proposal_done(CAIRN_ETIMEOUT); /* raft lost it */
    assert_int_equal(metrics_counter_get(&e->proposals_failed), 2);
    /* a store commit and a raft log sync land in their own histograms */
    metrics_commit_observe(metrics_now_ns());
    assert_int_equal(e->backend_commit.nb, 14);
    uint64_t nb = 0, nw = 0;
    for (int i = 0; i <= 14; i++) {
        nb += e->backend_commit.counts[i];
        nw += e->wal_fsync.counts[i];
    }
    assert_int_equal(nb, 1);
    assert_int_equal(nw, 0);
    metrics_wal_fsync_observe(metrics_now_ns());
    nw = 0;
    for (int i = 0; i <= 14; i++)
        nw += e->wal_fsync.counts[i];
    assert_int_equal(nw, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_double),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_histogram_bad_layout),
        cmocka_unit_test(test_label_and_help_escaping),
        cmocka_unit_test(test_grpc_counters),
        cmocka_unit_test(test_txn_op_counts),
        cmocka_unit_test(test_proposals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

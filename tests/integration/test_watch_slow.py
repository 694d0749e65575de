"""A watch stream that stops reading while many events are written.

A raw HTTP/2 client (h2) opens a Watch, creates a watcher on a prefix, reads
the created response, and then stops reading its socket -- with flow-control
windows opened wide, so the server is free to push as much as the kernel's
socket buffers take (its own receive buffer is small and fixed, so the
backlog really is the server's).  Meanwhile WATCH_SLOW_EVENTS (default 100,000; 30,000 in the sanitizer pass) small
puts are written through several concurrent gRPC channels.

  * every write succeeds;
  * the server's anonymous memory (RssAnon, /proc/<pid>/status) grows by
    less than 200 MiB while the reader is stalled (a bound, not a timing);
  * another, normally reading watcher on another connection gets every event;
  * when a stalled client reads again it gets every event in order with no
    gap; a second stalled client, resumed only after the store was compacted
    to its current revision, gets either everything or a contiguous prefix
    followed by a compaction cancel (compact_revision = the compacted
    revision), the latter only if the next revision it needed was compacted.

Only the public protocol is used; no knowledge of the server's internals.
"""

import os
import socket
import struct
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

from cairn_it import rpc_pb2 as pb, rpc_pb2_grpc
from watch_it import PUT, Streams, compact, prefix_end, rss_kib, wpb

# The sanitizer pass (CAIRN_SANITIZED) runs the same paths with 30,000.
N_EVENTS = int(os.environ.get("WATCH_SLOW_EVENTS",
                              30000 if os.environ.get("CAIRN_SANITIZED") else 100000))
N_KEYS = 1000
WRITERS = 4
INFLIGHT = 32            # futures in flight per writer
ANON_GROWTH_LIMIT_KIB = 200 * 1024
# Under ASan (tests/run-all.sh sets CAIRN_SANITIZED=1) shadow memory and the
# allocator's quarantine add to every allocation's footprint: the bound is
# the same bound scaled by ASan's overhead, still far from unbounded growth.
if os.environ.get("CAIRN_SANITIZED"):
    ANON_GROWTH_LIMIT_KIB *= 3
WINDOW = 2 ** 31 - 1
RCVBUF = 128 * 1024
VALUE_PAD = b"x" * 300   # ~400-byte responses: 100k of them are ~40 MB
PREFIX = b"slow/"


class RawWatch:
    """One Watch call on its own HTTP/2 connection, driven by hand."""

    def __init__(self, port):
        # A small, fixed receive buffer (no autotuning): what the stalled
        # client does not read stays on the server's side.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW})
        self.conn.increment_flow_control_window(WINDOW - 65535)
        self.sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(self.sid, [
            (":method", "POST"), (":scheme", "http"),
            (":path", "/etcdserverpb.Watch/Watch"),
            (":authority", "127.0.0.1:%d" % port),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ])
        self.sock.sendall(self.conn.data_to_send())
        self.buf = bytearray()
        self.resps = []
        self.ended = None

    def send(self, req):
        msg = req.SerializeToString()
        self.conn.send_data(self.sid, struct.pack(">BI", 0, len(msg)) + msg)
        self.sock.sendall(self.conn.data_to_send())

    def pump(self, timeout):
        """Read what is there (waiting at most `timeout`); parse responses."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return 0
        if not data:
            self.ended = self.ended or "eof"
            return 0
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                self.buf += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset,
                                 h2.events.ConnectionTerminated)):
                self.ended = ev
            elif isinstance(ev, h2.events.TrailersReceived):
                self.ended = dict(ev.headers)
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)
        n = 0
        while len(self.buf) >= 5:
            flag, ln = struct.unpack(">BI", self.buf[:5])
            assert flag == 0
            if len(self.buf) < 5 + ln:
                break
            self.resps.append(wpb.WatchResponse.FromString(bytes(self.buf[5:5 + ln])))
            del self.buf[:5 + ln]
            n += 1
        return n

    def next(self, timeout=10):
        deadline = time.monotonic() + timeout
        while not self.resps:
            assert self.ended is None, "stream ended: %r" % (self.ended,)
            left = deadline - time.monotonic()
            assert left > 0, "no response within %ss" % timeout
            self.pump(left)
        return self.resps.pop(0)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def write_all(server, n, first_index=0):
    """n puts to PREFIX keys over WRITERS channels; returns {rev: (key, value)}."""
    done = {}
    errors = []
    lock = threading.Lock()
    chans = [server.new_channel() for _ in range(WRITERS)]

    def worker(w):
        stub = rpc_pb2_grpc.KVStub(chans[w])
        futs = []

        def reap():
            for k, v, f in futs:
                try:
                    r = f.result()
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append(repr(e))
                    continue
                with lock:
                    done[r.header.revision] = (k, v)
            futs.clear()
        for i in range(first_index + w, first_index + n, WRITERS):
            k, v = PREFIX + b"%d" % (i % N_KEYS), b"v%d-" % i + VALUE_PAD
            futs.append((k, v, stub.Put.future(pb.PutRequest(key=k, value=v), timeout=60)))
            if len(futs) >= INFLIGHT:
                reap()
        reap()

    try:
        ts = [threading.Thread(target=worker, args=(w,)) for w in range(WRITERS)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=600)
        assert not any(t.is_alive() for t in ts), "writers did not finish"
    finally:
        for c in chans:
            c.close()
    assert not errors, errors[:5]
    assert len(done) == n, (len(done), n)
    return done


def resume(raw, writes, start_rev, compact_rev, timeout=300):
    """Read a stalled stream to its end: every event in order with no gap,
    or (if compact_rev) a contiguous prefix and then a compaction cancel.
    Returns (events read, cancel response or None)."""
    got = 0
    expect = start_rev + 1
    deadline = time.monotonic() + timeout
    while got < len(writes):
        assert time.monotonic() < deadline, "resumed reader got %d of %d" % (got, len(writes))
        r = raw.next(timeout=60)
        if r.canceled:
            assert compact_rev is not None, r
            assert r.compact_revision == compact_rev and not r.events, r
            # cancelled only because the next revision it needed was compacted
            assert expect < compact_rev, (expect, compact_rev)
            return got, r
        assert r.events and not r.created, r
        for e in r.events:
            assert e.type == PUT and e.kv.mod_revision == expect, (
                "gap/out of order: got rev %d, expected %d" % (e.kv.mod_revision, expect))
            assert (e.kv.key, e.kv.value) == writes[expect]
            expect += 1
            got += 1
        assert r.header.revision >= expect - 1
    return got, None


def test_stalled_readers(server):
    """Two stalled streams during the writes: the first resumes and must get
    everything; then the store is compacted to its current revision and the
    second resumes: everything, or a contiguous prefix and the cancel."""
    streams = Streams()
    raws = []
    try:
        start_rev = None
        for _ in range(2):
            raw = RawWatch(server.client_port)
            raws.append(raw)
            raw.send(wpb.WatchRequest(create_request=wpb.WatchCreateRequest(
                key=PREFIX, range_end=prefix_end(PREFIX))))
            created = raw.next()
            assert created.created and not created.canceled, created
            assert start_rev in (None, created.header.revision)
            start_rev = created.header.revision
        # A normal watcher on another connection, reading all along.
        ctl = streams.open(server)
        ctl.create_ok(PREFIX, prefix_end(PREFIX))
        ctl_events = []
        stop = threading.Event()

        def ctl_reader():
            while not stop.is_set() and len(ctl_events) < N_EVENTS:
                r = ctl.poll(0.5)
                if r is not None:
                    ctl_events.extend((e.kv.mod_revision, e.kv.key, e.kv.value)
                                      for e in r.events)
        t = threading.Thread(target=ctl_reader, daemon=True)
        t.start()

        _, anon0 = rss_kib(server.pid)
        writes = write_all(server, N_EVENTS)          # the raw clients read nothing
        rss1, anon1 = rss_kib(server.pid)
        print("server %s: RssAnon %d -> %d KiB (VmRSS now %d KiB) over %d events, "
              "2 stalled streams" % (server.binary, anon0, anon1, rss1, N_EVENTS))
        assert anon1 - anon0 < ANON_GROWTH_LIMIT_KIB, (anon0, anon1)
        revs = sorted(writes)
        assert revs == list(range(start_rev + 1, start_rev + 1 + N_EVENTS))

        t.join(timeout=120)
        stop.set()
        assert len(ctl_events) == N_EVENTS, len(ctl_events)
        assert ctl_events == [(r,) + writes[r] for r in revs]
        assert server.proc.poll() is None, server.log_tail()

        # First stalled reader: everything, in order.
        got, cancel = resume(raws[0], writes, start_rev, None)
        assert cancel is None and got == N_EVENTS
        print("resumed reader 1: all %d events" % got)

        # Compact everything, then the second one resumes.
        compact_rev = revs[-1]
        compact(server, compact_rev)
        got, cancel = resume(raws[1], writes, start_rev, compact_rev)
        print("resumed reader 2: %d events%s" % (
            got, ", then compaction cancel at %d" % compact_rev if cancel else ""))

        # Both connections still work.
        after = server.kv.Put(pb.PutRequest(key=PREFIX + b"after", value=b"x"),
                              timeout=10).header.revision
        assert after == revs[-1] + 1
        for raw, live in ((raws[0], True), (raws[1], cancel is None)):
            if live:
                r = raw.next(timeout=30)
                assert [(e.kv.key, e.kv.mod_revision) for e in r.events] == [
                    (PREFIX + b"after", after)], r
        raws[1].send(wpb.WatchRequest(create_request=wpb.WatchCreateRequest(
            key=PREFIX + b"after", start_revision=after)))
        r = raws[1].next(timeout=30)
        assert r.created and not r.canceled, r
        r = raws[1].next(timeout=30)
        assert [(e.kv.key, e.kv.mod_revision) for e in r.events] == [
            (PREFIX + b"after", after)], r
        assert server.proc.poll() is None, server.log_tail()
    finally:
        for raw in raws:
            raw.close()
        streams.close()


STALLED_CONNS = 32
STALLED_EVENTS = 50000


def test_many_stalled_connections_memory(server):
    """Memory stays bounded with many stalled readers too, not only with one:
    32 connections, each with one watch stream that stopped reading (windows
    wide open), while 50,000 ~400-byte events are written.  etcd 3.4 holds
    little per stalled stream (gRPC's per-stream write quota, a 128-response
    channel, then its victim/unsynced path re-reads from the store); the
    same 200 MiB bound applies to the whole server here."""
    raws = []
    try:
        for _ in range(STALLED_CONNS):
            raw = RawWatch(server.client_port)
            raws.append(raw)
            raw.send(wpb.WatchRequest(create_request=wpb.WatchCreateRequest(
                key=PREFIX, range_end=prefix_end(PREFIX))))
            created = raw.next()
            assert created.created and not created.canceled, created
        _, anon0 = rss_kib(server.pid)
        write_all(server, STALLED_EVENTS)
        rss1, anon1 = rss_kib(server.pid)
        print("server %s: RssAnon %d -> %d KiB (VmRSS now %d KiB), %d stalled "
              "connections, %d events" % (server.binary, anon0, anon1, rss1,
                                          STALLED_CONNS, STALLED_EVENTS))
        assert anon1 - anon0 < ANON_GROWTH_LIMIT_KIB, (
            "anonymous memory grew by %d KiB (%d KiB per stalled connection)"
            % (anon1 - anon0, (anon1 - anon0) // STALLED_CONNS))
        assert server.proc.poll() is None, server.log_tail()
        # one of them resumes and gets the first events in order
        r = raws[0].next(timeout=30)
        assert r.events and r.events[0].kv.mod_revision == created.header.revision + 1
    finally:
        for raw in raws:
            raw.close()

"""Helpers for the Watch tests: a bounded, thread-driven gRPC Watch stream.

A ``WatchStream`` is one ``etcdserverpb.Watch/Watch`` call.  Requests are fed
from a queue (a generator handed to grpc), and a reader thread puts every
response into another queue, so each read is bounded by a timeout: a missing
response fails the test instead of hanging it.
"""

import queue
import threading
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from cairn_it import rpc_pb2 as pb

READ_TIMEOUT = 10.0       # seconds to wait for one expected response
_END = object()

PUT = 0                   # mvccpb.Event.EventType
DELETE = 1


# --------------------------------------------------------------------------
# Watch messages with the fields python3-etcd3's (older) rpc.proto lacks
# --------------------------------------------------------------------------
#
# Debian's python3-etcd3 ships an rpc.proto from before etcd 3.4: its
# WatchCreateRequest has no watch_id (7) / fragment (8), WatchRequest has no
# progress_request (3), WatchResponse no fragment (7).  Rather than depend on
# protoc at test time, we copy its descriptors into a private pool, add the
# missing fields (numbers and types as in etcd 3.4's rpc.proto), and build
# message classes from that.  The wire format is all that matters.

def _build_watch_messages():
    from etcd3.etcdrpc import rpc_pb2
    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    for dep in rpc_pb2.DESCRIPTOR.dependencies:
        p = descriptor_pb2.FileDescriptorProto()
        dep.CopyToProto(p)
        pool.Add(p)
    fp = descriptor_pb2.FileDescriptorProto()
    rpc_pb2.DESCRIPTOR.CopyToProto(fp)
    msgs = {m.name: m for m in fp.message_type}

    def add(msg, name, number, ftype, type_name=None, oneof=None):
        assert name not in [f.name for f in msg.field], (msg.name, name)
        f = msg.field.add(name=name, number=number, label=F.LABEL_OPTIONAL,
                          type=ftype)
        if type_name:
            f.type_name = type_name
        if oneof is not None:
            f.oneof_index = oneof

    prog = fp.message_type.add(name="WatchProgressRequest")
    del prog  # an empty message
    add(msgs["WatchRequest"], "progress_request", 3, F.TYPE_MESSAGE,
        ".etcdserverpb.WatchProgressRequest", oneof=0)
    add(msgs["WatchCreateRequest"], "watch_id", 7, F.TYPE_INT64)
    add(msgs["WatchCreateRequest"], "fragment", 8, F.TYPE_BOOL)
    add(msgs["WatchResponse"], "fragment", 7, F.TYPE_BOOL)
    pool.Add(fp)
    fac = message_factory.MessageFactory(pool)

    def cls(full):
        d = pool.FindMessageTypeByName(full)
        get = getattr(message_factory, "GetMessageClass", None)
        return get(d) if get else fac.GetPrototype(d)

    class W:
        pass
    for n in ("WatchRequest", "WatchCreateRequest", "WatchCancelRequest",
              "WatchProgressRequest", "WatchResponse", "ResponseHeader"):
        setattr(W, n, cls("etcdserverpb." + n))
    W.Event = cls("mvccpb.Event")
    W.KeyValue = cls("mvccpb.KeyValue")
    W.NOPUT = 0
    W.NODELETE = 1
    return W


wpb = _build_watch_messages()
WATCH_METHOD = "/etcdserverpb.Watch/Watch"


def prefix_end(key):
    """etcd's clientv3.GetPrefixRangeEnd."""
    end = bytearray(key)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


class StreamEnded(AssertionError):
    pass


class WatchStream:
    """One Watch call on ``channel``; responses are read by a daemon thread."""

    def __init__(self, channel, metadata=None):
        self._reqs = queue.Queue()
        self.resps = queue.Queue()
        self.error = None
        self.ended = False
        self._closed = False
        call = channel.stream_stream(
            WATCH_METHOD, request_serializer=wpb.WatchRequest.SerializeToString,
            response_deserializer=wpb.WatchResponse.FromString)
        self._call = call(self._requests(), metadata=metadata)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _requests(self):
        while True:
            r = self._reqs.get()
            if r is None:
                return
            yield r

    def _read(self):
        try:
            for r in self._call:
                self.resps.put(r)
        except grpc.RpcError as e:
            self.error = e
        except Exception as e:  # noqa: BLE001 (reported through .error)
            self.error = e
        finally:
            self.resps.put(_END)

    # -- requests --------------------------------------------------------
    def send(self, req):
        self._reqs.put(req)

    def create(self, key, range_end=b"", **kw):
        """Send a WatchCreateRequest (no wait)."""
        self.send(wpb.WatchRequest(create_request=wpb.WatchCreateRequest(
            key=key, range_end=range_end, **kw)))

    def create_ok(self, key, range_end=b"", timeout=READ_TIMEOUT, **kw):
        """Create a watcher and return its (successful) created response."""
        self.create(key, range_end, **kw)
        r = self.get(timeout)
        assert r.created and not r.canceled, r
        assert not r.events, r
        return r

    def cancel(self, watch_id):
        self.send(wpb.WatchRequest(cancel_request=wpb.WatchCancelRequest(watch_id=watch_id)))

    def progress(self):
        self.send(wpb.WatchRequest(progress_request=wpb.WatchProgressRequest()))

    # -- responses -------------------------------------------------------
    def get(self, timeout=READ_TIMEOUT):
        """The next response; fails if none arrives in time or the stream ended."""
        try:
            r = self.resps.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no watch response within %.1fs" % timeout) from None
        if r is _END:
            self.ended = True
            self.resps.put(_END)      # stay ended for later readers
            raise StreamEnded("watch stream ended: %r" % (self.error,))
        return r

    def poll(self, timeout):
        """The next response, or None if none arrives within ``timeout``."""
        try:
            r = self.resps.get(timeout=timeout)
        except queue.Empty:
            return None
        if r is _END:
            self.ended = True
            self.resps.put(_END)
            raise StreamEnded("watch stream ended: %r" % (self.error,))
        return r

    def events(self, n, timeout=READ_TIMEOUT, watch_id=None):
        """Read responses until ``n`` events arrived; returns (events, responses).

        Responses with no events (progress notifications) are kept in the
        returned responses but contribute no events.  Fails on overshoot.
        """
        evs, resps = [], []
        deadline = time.monotonic() + timeout
        while len(evs) < n:
            left = deadline - time.monotonic()
            assert left > 0, "only %d of %d events within %.1fs: %r" % (
                len(evs), n, timeout, resps)
            r = self.get(left)
            if watch_id is not None:
                assert r.watch_id == watch_id, r
            resps.append(r)
            evs.extend(r.events)
        assert len(evs) == n, (n, evs)
        return evs, resps

    def half_close(self):
        """End the request stream (the client is done sending)."""
        self._reqs.put(None)

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._reqs.put(None)
        self._call.cancel()
        self._thread.join(timeout=10)


def ev_tuple(e, with_prev=True):
    """A comparable summary of an mvccpb.Event."""
    kv = e.kv
    t = (e.type, kv.key, kv.value, kv.create_revision, kv.mod_revision,
         kv.version, kv.lease)
    if with_prev:
        if e.HasField("prev_kv"):
            p = e.prev_kv
            t += ((p.key, p.value, p.create_revision, p.mod_revision, p.version,
                   p.lease),)
        else:
            t += (None,)
    return t


def put(server, key, value, **kw):
    return server.kv.Put(pb.PutRequest(key=key, value=value, **kw), timeout=10)


def delete(server, key, range_end=b"", **kw):
    return server.kv.DeleteRange(
        pb.DeleteRangeRequest(key=key, range_end=range_end, **kw), timeout=10)


def txn(server, success=(), compare=(), failure=()):
    return server.kv.Txn(pb.TxnRequest(compare=list(compare), success=list(success),
                                       failure=list(failure)), timeout=10)


def op_put(key, value, **kw):
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


def op_del(key, range_end=b"", **kw):
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(
        key=key, range_end=range_end, **kw))


def current_rev(server):
    return server.kv.Range(pb.RangeRequest(key=b"\x00"), timeout=10).header.revision


def compact(server, rev, physical=True):
    return server.kv.Compact(pb.CompactionRequest(revision=rev, physical=physical),
                             timeout=30)


def rss_kib(pid):
    """(VmRSS, RssAnon) of a process in KiB, from /proc/<pid>/status."""
    vals = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                vals[k] = int(v.split()[0])
    return vals["VmRSS"], vals["RssAnon"]


def server_is_etcd34(server):
    """True if the server under test is real etcd 3.4 (lacks 3.4.31+ fixes
    only if its patch level is below 31)."""
    from cairn_it import is_etcd
    if not is_etcd(server.binary):
        return False
    st = server.maint.Status(pb.StatusRequest(), timeout=10)
    return st.version.startswith("3.4.")


def etcd_version(server):
    return server.maint.Status(pb.StatusRequest(), timeout=10).version


def has_progress_fix(server):
    """Does the server answer progress requests only when synced (3.4.31+,
    3.5.13+, and cairn)?  etcd 3.4.23 (Debian's) always answers."""
    from cairn_it import is_etcd
    if not is_etcd(server.binary):
        return True
    v = tuple(int(x) for x in etcd_version(server).split(".")[:3])
    return (v[:2] == (3, 4) and v[2] >= 31) or (v[:2] == (3, 5) and v[2] >= 13) \
        or v[:2] >= (3, 6)


class Streams:
    """Owns watch streams and channels; closes them all at teardown."""

    def __init__(self):
        self._streams = []
        self._channels = []

    def channel(self, server):
        ch = server.new_channel()
        self._channels.append(ch)
        return ch

    def open(self, server_or_channel, metadata=None):
        ch = server_or_channel
        if not isinstance(ch, grpc.Channel):
            ch = self.channel(ch)
        ws = WatchStream(ch, metadata=metadata)
        self._streams.append(ws)
        return ws

    def close(self):
        for ws in self._streams:
            ws.close()
        for ch in self._channels:
            ch.close()
        self._streams, self._channels = [], []


def kv(key, value, create, mod, version, lease=0):
    """The KeyValue summary used in ev_tuple."""
    return (key, value, create, mod, version, lease)


def E(etype, key, value=b"", create=0, mod=0, version=0, lease=0, prev=None):
    """Expected event in ev_tuple form.  A DELETE carries only key and
    mod_revision (etcd's tombstone)."""
    return (etype, key, value, create, mod, version, lease, prev)

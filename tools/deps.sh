#!/bin/sh
# Installs the Debian packages cairn needs to build and test, when missing.
# As root it runs apt-get; otherwise it prints the command to run.
PKGS="gcc make pkg-config libuv1-dev libnghttp2-dev libssl-dev libprotobuf-c-dev
protobuf-c-compiler liblmdb-dev libyaml-dev libcmocka-dev libcrypt-dev libraft-dev etcd-server etcd-client python3
python3-etcd3 python3-grpcio python3-protobuf python3-pytest python3-h2
python3-prometheus-client iproute2 procps openssl curl
python3-etcd3gw"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
        echo "deps: apt-get install failed for:$missing" >&2
        exit 1
    }
    # Debian's etcd-server package may start a system etcd on 2379; cairn's
    # tests never use it, but `make run` needs the port.
else
    echo "deps: missing packages:$missing" >&2
    echo "deps: run as root: apt-get install$missing" >&2
    exit 1
fi

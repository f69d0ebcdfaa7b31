#!/bin/sh
# Writes the public zone of a default firewalld install after a few
# firewall-offline-cmd changes to OUT (default
# testdata/import/firewalld-offline-public.xml). firewall-offline-cmd runs
# without the daemon or D-Bus, in its own mount namespace over a private copy
# of /etc/firewalld (the host's is not touched) and its own network namespace.
# Needs root and the Debian package firewalld. Not run by CI: the output is committed.
set -eu
out=$(realpath -m "${1:-testdata/import/firewalld-offline-public.xml}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
unshare --net --mount --propagation private sh -eu -c '
    tmp=$1 out=$2
    cp -a /etc/firewalld "$tmp/etc"
    mount --bind "$tmp/etc" /etc/firewalld
    fw() { firewall-offline-cmd "$@" >/dev/null; }
    fw --zone=public --add-service=http
    fw --zone=public --add-service=https
    fw --zone=public --add-port=8080-8081/tcp
    fw --zone=public --add-rich-rule="rule family=ipv4 source address=10.10.0.0/24 service name=postgresql accept"
    fw --zone=public --add-rich-rule="rule family=ipv4 source address=192.0.2.0/24 drop"
    cp /etc/firewalld/zones/public.xml "$out"
' sh "$tmp" "$out"
echo "wrote $out"

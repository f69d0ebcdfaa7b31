#!/bin/sh
# Runs the real firewalld daemon, confined, and writes what it did:
#   DIR/firewalld-daemon-public.xml   the public zone, as firewall-offline-cmd wrote it
#   DIR/firewalld-daemon-public.nft   `nft list ruleset` once the daemon had loaded it
# (DIR defaults to testdata/import). The zone: firewalld's default public
# zone plus http, https, ports 8080-8081/tcp, two rich rules (postgresql
# from 10.10.0.0/24 accepted, 192.0.2.0/24 dropped) and the interface eth0.
#
# Everything runs in throwaway namespaces, so the host is not touched: its
# own network namespace (the daemon's nft ruleset and eth0, one end of a veth pair,
# exist only there), pid namespace (the daemon and its bus die with it) and
# mount namespace with a private tmpfs over /run (so /run/dbus, the bus
# socket, /run/firewalld) and /var/log, and a private copy of /etc/firewalld
# that firewall-offline-cmd edits. The bus is a private `dbus-daemon` with
# the system bus's policy files and no service activation (no polkit:
# firewalld then lets root in). Needs root and the Debian packages firewalld
# and dbus-daemon. Not run by CI: the output is committed.
set -eu
dir=$(realpath -m "${1:-testdata/import}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
unshare --net --mount --pid --fork --mount-proc --propagation private sh -eu -c '
    tmp=$1 dir=$2
    mount -t tmpfs tmpfs /run
    mount -t tmpfs tmpfs /var/log
    mkdir /run/dbus
    cp -a /etc/firewalld "$tmp/etc"
    mount --bind "$tmp/etc" /etc/firewalld
    fw() { firewall-offline-cmd "$@" >/dev/null; }
    fw --zone=public --add-service=http
    fw --zone=public --add-service=https
    fw --zone=public --add-port=8080-8081/tcp
    fw --zone=public --add-rich-rule="rule family=ipv4 source address=10.10.0.0/24 service name=postgresql accept"
    fw --zone=public --add-rich-rule="rule family=ipv4 source address=192.0.2.0/24 drop"
    fw --zone=public --add-interface=eth0
    ip link set lo up
    ip link add eth0 type veth peer name eth0-peer
    ip link set eth0 up
    cat >"$tmp/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
</busconfig>
EOF
    dbus-daemon --config-file="$tmp/bus.conf" --fork --nopidfile
    export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
    firewalld --nofork --nopid --log-target=file --log-file="$tmp/firewalld.log" &
    i=0
    until [ "$(firewall-cmd --state 2>/dev/null)" = running ]; do
        i=$((i + 1))
        if [ "$i" -gt 60 ]; then
            echo "firewalld did not start:" >&2
            cat "$tmp/firewalld.log" >&2
            exit 1
        fi
        sleep 1
    done
    [ "$(firewall-cmd --get-zone-of-interface=eth0)" = public ]
    firewall-cmd --zone=public --list-all >&2
    cp /etc/firewalld/zones/public.xml "$dir/firewalld-daemon-public.xml"
    nft list ruleset >"$dir/firewalld-daemon-public.nft"
' sh "$tmp" "$dir"
echo "wrote $dir/firewalld-daemon-public.xml and $dir/firewalld-daemon-public.nft"

#!/bin/sh
# A data node: the durability settings of docs/durability.md on every node (a replica may be promoted),
# announced under its stable DNS name, a replica of the current primary unless it is that primary.
set -eu
me="$(hostname).dmulog-valkey.${POD_NAMESPACE:?}.svc"
primary=$(sh /scripts/find-primary.sh)
conf=/run/valkey/valkey.conf
cat > "$conf" <<CONF
port 6379
bind * -::*
protected-mode no
dir /data
appendonly yes
appendfsync always
save ""
min-replicas-to-write 1
min-replicas-max-lag 2
replica-announce-ip $me
CONF
if [ "$primary" != "$me" ]; then echo "replicaof $primary 6379" >> "$conf"; fi
exec valkey-server "$conf"

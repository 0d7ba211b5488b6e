#!/bin/sh
# A Sentinel, monitoring the current primary under the name logsvc's URL gives (dmulog), quorum 2. Its
# config file is on an emptyDir: Sentinel rewrites it as it learns the replicas and the other Sentinels.
set -eu
me="$(hostname).dmulog-sentinel.${POD_NAMESPACE:?}.svc"
primary=$(sh /scripts/find-primary.sh)
conf=/run/sentinel/sentinel.conf
if [ ! -s "$conf" ]; then
  cat > "$conf" <<CONF
port 26379
protected-mode no
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $me
sentinel monitor dmulog $primary 6379 2
sentinel down-after-milliseconds dmulog 5000
sentinel failover-timeout dmulog 60000
sentinel parallel-syncs dmulog 1
CONF
fi
exec valkey-sentinel "$conf"

#!/bin/sh
# Print the host name of the current Valkey primary, for a data node or a Sentinel that is (re)starting:
# 1. what a running Sentinel says (after a failover the primary is no longer dmulog-valkey-0);
# 2. else a data node that calls itself master and has replicas (every Sentinel restarted at once);
# 3. else dmulog-valkey-0: the first start, nothing runs yet.
# Starting a node as primary beside the real one would split the set; asking first is what prevents it.
set -u
ns="${POD_NAMESPACE:?}"
for i in 0 1 2; do
  addr=$(timeout 3 valkey-cli -h "dmulog-sentinel-$i.dmulog-sentinel.$ns.svc" -p 26379 --raw \
    sentinel get-master-addr-by-name dmulog 2>/dev/null | head -n 1)
  if [ -n "$addr" ]; then echo "$addr"; exit 0; fi
done
for i in 0 1 2; do
  host="dmulog-valkey-$i.dmulog-valkey.$ns.svc"
  info=$(timeout 3 valkey-cli -h "$host" -p 6379 info replication 2>/dev/null | tr -d '\r')
  case "$info" in
    *role:master*connected_slaves:[1-9]*) echo "$host"; exit 0 ;;
  esac
done
echo "dmulog-valkey-0.dmulog-valkey.$ns.svc"

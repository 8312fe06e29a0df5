#!/bin/sh
# One-shot CouchDB 3 cluster set-up through _cluster_setup; safe to run again (exits 0 once the cluster is finished).
#
#   COUCHDB_USER / COUCHDB_PASSWORD   the admin every node was started with
#   COUCHDB_UUID                      one server uuid for every node (replication checkpoints depend on it)
#   COUCHDB_COORDINATOR               the node the set-up talks to, e.g. couchdb-0.couchdb (host name)
#   COUCHDB_NODES                     the other nodes' host names, space-separated
#   COUCHDB_PORT                      default 5984
# Only POSIX sh and curl: runs in the curl image (compose) or any image with curl (Kubernetes Job).
set -eu

port="${COUCHDB_PORT:-5984}"
coordinator="${COUCHDB_COORDINATOR:?set COUCHDB_COORDINATOR}"
auth="${COUCHDB_USER:?set COUCHDB_USER}:${COUCHDB_PASSWORD:?set COUCHDB_PASSWORD}"

call() { # METHOD HOST PATH [JSON BODY]
    curl --silent --show-error --fail-with-body --max-time 30 -u "$auth" -X "$1" \
        -H 'Content-Type: application/json' "http://$2:$port$3" ${4:+--data "$4"}
}

wait_up() {
    tries=0
    until curl --silent --fail --max-time 5 "http://$1:$port/_up" >/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 120 ] || { echo "node $1 never came up" >&2; exit 1; }
        sleep 2
    done
}

for host in "$coordinator" ${COUCHDB_NODES:-}; do wait_up "$host"; done

if call GET "$coordinator" /_cluster_setup | grep -q '"cluster_finished"'; then
    echo "cluster already set up"
    exit 0
fi

count=$(( $(echo ${COUCHDB_NODES:-} | wc -w) + 1 ))
for host in "$coordinator" ${COUCHDB_NODES:-}; do
    # same uuid and cookie-auth secret on every node, so sessions and checkpoints are valid cluster-wide
    call PUT "$host" /_node/_local/_config/couchdb/uuid "\"${COUCHDB_UUID:?set COUCHDB_UUID}\"" >/dev/null
done
call POST "$coordinator" /_cluster_setup "{\"action\":\"enable_cluster\",\"bind_address\":\"0.0.0.0\",\
\"username\":\"$COUCHDB_USER\",\"password\":\"$COUCHDB_PASSWORD\",\"node_count\":\"$count\"}"
for host in ${COUCHDB_NODES:-}; do
    call POST "$coordinator" /_cluster_setup "{\"action\":\"enable_cluster\",\"bind_address\":\"0.0.0.0\",\
\"username\":\"$COUCHDB_USER\",\"password\":\"$COUCHDB_PASSWORD\",\"port\":$port,\"node_count\":\"$count\",\
\"remote_node\":\"$host\",\"remote_current_user\":\"$COUCHDB_USER\",\"remote_current_password\":\"$COUCHDB_PASSWORD\"}"
    call POST "$coordinator" /_cluster_setup "{\"action\":\"add_node\",\"host\":\"$host\",\"port\":$port,\
\"username\":\"$COUCHDB_USER\",\"password\":\"$COUCHDB_PASSWORD\"}"
done
call POST "$coordinator" /_cluster_setup '{"action":"finish_cluster"}'
call GET "$coordinator" /_cluster_setup
call GET "$coordinator" /_membership

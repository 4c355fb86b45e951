#!/bin/sh
# The secrets of deploy/docker-compose.yml, random, in the env file compose reads: MinIO's root user and
# password (Milvus's object store), Grafana's admin password and the Redis password (Redis AUTH, in the
# gateway's PARTSIM_GATEWAY_REDIS_URL). Compose refuses to start without them (${VAR:?...}): there are no
# default passwords.
#
#   scripts/compose-secrets.sh                 # writes deploy/.env (git-ignored), mode 0600
#   scripts/compose-secrets.sh PATH            # another env file
#   docker compose --env-file deploy/.env -f deploy/docker-compose.yml up -d --build
#
# Rerunning keeps the values already in the file and adds only missing ones: MinIO, Grafana and Redis keep
# the first credentials in their volumes, so changing one needs `docker compose down -v` (losing the data)
# or changing it inside that service first.
set -eu

out=${1:-"$(dirname "$0")/../deploy/.env"}
umask 077
[ -e "$out" ] || : >"$out"
chmod 600 "$out"

random_hex() { # $1 bytes of /dev/urandom as hex (URL-safe: the Redis password goes into a redis:// URL)
    od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

added=""
add() { # NAME VALUE: append unless NAME is already set in the file
    if ! grep -q "^$1=" "$out"; then
        printf '%s=%s\n' "$1" "$2" >>"$out"
        added="$added $1"
    fi
}

add MINIO_ACCESS_KEY "partsim-$(random_hex 8)"
add MINIO_SECRET_KEY "$(random_hex 24)"
add GRAFANA_ADMIN_PASSWORD "$(random_hex 16)"
add REDIS_PASSWORD "$(random_hex 24)"

if [ -n "$added" ]; then
    echo "wrote$added to $out"
else
    echo "$out has every secret already; nothing changed"
fi

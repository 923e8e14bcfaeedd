#!/usr/bin/env bash
# Create the compose stack's secrets in deploy/docker/secrets/ (never committed). There are no
# default passwords: every secret is random, made here, and readable only by the container user
# that needs it (the files are bind-mounted with their host owner and mode). Idempotent: an
# existing secret is kept. docs/operate.md, "Docker Compose".
#
#   sudo deploy/docker/make-secrets.sh                  # before the first `docker compose up`
#   sudo deploy/docker/make-secrets.sh --influx-tokens  # once InfluxDB runs: the scoped tokens
#   deploy/docker/make-secrets.sh --dir DIR --no-chown  # elsewhere / rootless Docker (owners as is)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=$HERE/secrets
CHOWN=1
TOKENS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR=${2:?--dir needs a directory}; shift ;;
        --no-chown) CHOWN=0 ;;
        --influx-tokens) TOKENS=1 ;;
        -h | --help) sed -n '2,11p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "make-secrets.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$CHOWN" = 1 ] && [ "$(id -u)" != 0 ]; then
    echo "make-secrets.sh: run as root to give each secret to its container's user, or pass --no-chown" >&2
    exit 2
fi

# container uids: the gateway image (Dockerfile UID), influxdb:2 (influxdb), grafana (grafana)
GATEWAY_UID=10001
INFLUX_UID=1000
GRAFANA_UID=472

install -d -m 0755 "$DIR"
# secret NAME UID GENERATOR...: create DIR/NAME (mode 0400, owner UID) from the generator's output
secret() {
    local name=$1 uid=$2 path=$DIR/$1
    shift 2
    if [ -s "$path" ]; then
        echo "[ok]       $name"
        return 0
    fi
    (umask 077 && "$@" >"$path.tmp")
    chmod 0400 "$path.tmp"
    [ "$CHOWN" = 0 ] || chown "$uid:$uid" "$path.tmp"
    mv -f "$path.tmp" "$path"
    echo "[created]  $name"
}
random_b64() { head -c "$1" /dev/urandom | base64 -w0; echo; }
password() { head -c 24 /dev/urandom | base64 -w0 | tr '+/' '-_'; echo; }

if [ "$TOKENS" = 0 ]; then
    secret state_key "$GATEWAY_UID" random_b64 32 # the state encryption key: back it up elsewhere
    secret influx_admin_password "$INFLUX_UID" password
    secret influx_admin_token "$INFLUX_UID" random_b64 48
    secret grafana_admin_password "$GRAFANA_UID" password
    [ -s "$DIR/influx_gateway_token" ] || echo "next: docker compose up -d influxdb, then $0 --influx-tokens"
    exit 0
fi

# Scoped tokens, made by the running InfluxDB: write-only for the gateway, read-only for Grafana.
compose() { docker compose -p "${COMPOSE_PROJECT_NAME:-ds4h}" -f "$HERE/compose.yaml" "$@"; }
# shellcheck disable=SC2016 # expanded inside the container
bucket_id=$(compose exec -T influxdb sh -c \
    'influx bucket list --name ds4h --hide-headers -t "$(cat /run/secrets/influx_admin_token)"' | awk '{ print $1 }')
[ -n "$bucket_id" ] || { echo "make-secrets.sh: no bucket ds4h in InfluxDB (is the influxdb service up?)" >&2; exit 1; }
auth() {
    compose exec -T influxdb sh -c \
        "influx auth create --org ds4h --$1-bucket $bucket_id --description '$2' --json -t \"\$(cat /run/secrets/influx_admin_token)\"" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
secret influx_gateway_token "$GATEWAY_UID" auth write "ds4h-gateway writes"
secret influx_grafana_token "$GRAFANA_UID" auth read "Grafana reads"
echo "next: docker compose up -d"

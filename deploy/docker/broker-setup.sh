#!/bin/sh
# One-shot init step of the compose stack (service `pki-init`, the gateway image, user ds4h): the
# site PKI in the gateway's state volume and the broker's TLS + ACL + CRL configuration in the
# shared volume /etc/mosquitto/ds4h. Idempotent: what exists is kept (docs/pki.md, docs/operate.md).
#   DS4H_SITE_NAME    the CA's name (default "ds4h site")
#   DS4H_MQTT_HOSTS   names/addresses the 5G devices use for the broker, comma-separated; the
#                     compose service name `mosquitto` (used by the gateway) is always added
set -eu
STATE=/var/lib/ds4h-gateway
OUT=/etc/mosquitto/ds4h
if [ ! -f "$STATE/pki/ca.crt" ]; then
    ds4h-gateway pki init --state-dir "$STATE" --name "${DS4H_SITE_NAME:-ds4h site}"
fi
if [ ! -f "$STATE/pki/server.crt" ]; then
    set -- --host mosquitto
    old_ifs=$IFS
    IFS=,
    for h in ${DS4H_MQTT_HOSTS:-}; do
        [ -z "$h" ] || set -- "$@" --host "$h"
    done
    IFS=$old_ifs
    ds4h-gateway pki issue-server --state-dir "$STATE" "$@"
fi
if [ ! -f "$STATE/pki/gateway.crt" ]; then
    ds4h-gateway pki issue-gateway --state-dir "$STATE"
fi
mkdir -p "$OUT/data"
# The broker container runs as the same uid (no privilege drop), so `user` is only a formality.
ds4h-gateway pki mosquitto-config --state-dir "$STATE" --out "$OUT" --bind 0.0.0.0 \
    --persistence-dir "$OUT/data" --user ds4h

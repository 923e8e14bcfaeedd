#!/usr/bin/env bash
# Install (or upgrade) ds4h-gateway as a systemd service on Raspberry Pi OS bookworm (arm64) or
# Debian 12. Idempotent: run it again after `git pull` to upgrade; what is already in place is
# reported as [ok] and left alone. Operator guide: docs/operate.md.
#
#   sudo deploy/pi/install.sh --dry-run                      # print every action, change nothing
#   sudo deploy/pi/install.sh --state-key-file /media/ds4h-key/state.key --start
#   deploy/pi/install.sh --root /tmp/image                   # into a fake root / image tree
#
# Steps: packages (python3, python3-venv, bluez), user (systemd-sysusers: ds4h in group bluetooth),
# directories, venv (/opt/ds4h-gateway/venv, pip install of this repository), config
# (/etc/ds4h-gateway/gateway.toml, never overwritten), bluez (SecureConnections = only), state key
# (TPM2-sealed credential, or a key file on another medium), service (unit, enable, start).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

ROOT=""
DRY=0
SOURCE="$REPO"
EXTRAS=""
BLUETOOTH=1
STATE_KEY_FILE=""
NAME=""
START=0

PREFIX=/opt/ds4h-gateway
VENV=$PREFIX/venv
ETC=/etc/ds4h-gateway
STATE=/var/lib/ds4h-gateway
UNIT=/etc/systemd/system/ds4h-gateway.service
DROPIN_DIR=/etc/systemd/system/ds4h-gateway.service.d
SYSUSERS=/etc/sysusers.d/ds4h-gateway.conf
CREDSTORE=/etc/credstore.encrypted
BLUEZ_CONF=/etc/bluetooth/main.conf
SVC_USER=ds4h

usage() {
    cat <<'EOF'
usage: install.sh [--dry-run] [--root DIR] [--source DIR|WHEEL] [--extras LIST] [--no-bluetooth]
                  [--state-key-file PATH] [--name NAME] [--start]

  --dry-run              print every action, change nothing
  --root DIR             install into DIR (a fake root or an image tree): no apt-get, no venv (a venv
                         is not relocatable: install it on the target), systemctl --root for enable
  --source DIR|WHEEL     what pip installs into the venv (default: this repository)
  --extras LIST          pip extras, e.g. bumble (the bumble BLE backend)
  --no-bluetooth         MQTT-only site: no bluez, no BlueZ settings, no bluetooth group
  --state-key-file PATH  keep the state encryption key in PATH on another medium (a USB key),
                         created if missing, loaded with LoadCredential= (boards without a TPM2)
  --name NAME            gateway.name of a new config (default: the host name)
  --start                start the service at the end (restart it when something changed)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --source) SOURCE=${2:?--source needs a path}; shift ;;
        --extras) EXTRAS=${2:?--extras needs a list}; shift ;;
        --no-bluetooth) BLUETOOTH=0 ;;
        --state-key-file) STATE_KEY_FILE=${2:?--state-key-file needs a path}; shift ;;
        --name) NAME=${2:?--name needs a value}; shift ;;
        --start) START=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || { echo "install.sh: --root $ROOT is not a directory" >&2; exit 2; }
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=""
fi
if [ -n "$STATE_KEY_FILE" ] && [ "${STATE_KEY_FILE#/}" = "$STATE_KEY_FILE" ]; then
    echo "install.sh: --state-key-file must be an absolute path" >&2
    exit 2
fi
case "$NAME" in *[\"\\/\&]*) echo "install.sh: --name may not contain \" \\ / &" >&2; exit 2 ;; esac
if [ -z "$ROOT" ] && [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (sudo), or with --dry-run or --root DIR" >&2
    exit 2
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
CHANGED=0
RELOAD=0 # a unit file or drop-in changed: systemctl daemon-reload

say() { printf '%-10s %s\n' "[$1]" "$2"; }
ok() { say ok "$1"; }
skip() { say skip "$1"; }
warn() { say warn "$1"; }
# change DESCRIPTION COMMAND...: run COMMAND, or only print it with --dry-run
change() {
    local what=$1
    shift
    if [ "$DRY" = 1 ]; then
        say dry-run "would $what: $*"
    else
        "$@"
        say change "$what"
        CHANGED=1
    fi
}
systemd_running() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

# numeric uid / gid of a name in the target's passwd / group ("" when unknown)
uid_of() { if [ "$1" = root ]; then echo 0; elif [ -f "$ROOT/etc/passwd" ]; then awk -F: -v n="$1" '$1 == n { print $3 }' "$ROOT/etc/passwd"; fi; }
gid_of() { if [ "$1" = root ]; then echo 0; elif [ -f "$ROOT/etc/group" ]; then awk -F: -v n="$1" '$1 == n { print $3 }' "$ROOT/etc/group"; fi; }
in_group() {
    [ -f "$ROOT/etc/group" ] || return 1
    awk -F: -v g="$2" -v u="$1" '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) f = 1 } END { exit !f }' "$ROOT/etc/group"
}
# owner_ids USER:GROUP -> "uid:gid", or "" when either is unknown in the target
owner_ids() {
    local u g
    u=$(uid_of "${1%%:*}")
    g=$(gid_of "${1#*:}")
    if [ -n "$u" ] && [ -n "$g" ]; then echo "$u:$g"; fi
}
# meta_ok PATH MODE USER:GROUP: does PATH have this mode and owner?
meta_ok() {
    local ids
    [ "$(stat -c %a "$1")" = "${2#0}" ] || return 1
    ids=$(owner_ids "$3")
    [ -n "$ids" ] && [ "$(stat -c %u:%g "$1")" = "$ids" ]
}
set_meta() {
    local ids
    chmod "$2" "$1"
    ids=$(owner_ids "$3")
    if [ -z "$ids" ]; then
        warn "$1: owner $3 unknown in the target, left as is"
    elif [ "$(id -u)" = 0 ]; then
        chown "$ids" "$1"
    else
        warn "$1: not root, owner $3 not set"
    fi
}
# put_file SRC DEST MODE USER:GROUP: install SRC as DEST (a path in the target) when it differs
put_file() {
    local src=$1 dest=$ROOT$2
    if [ -f "$dest" ] && cmp -s "$src" "$dest" && meta_ok "$dest" "$3" "$4"; then
        ok "$2"
        return 0
    fi
    case "$2" in /etc/systemd/*) RELOAD=1 ;; esac
    if [ "$DRY" = 1 ]; then
        say dry-run "would install $2 (mode $3, $4)"
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    cp "$src" "$TMP/put" && set_meta "$TMP/put" "$3" "$4" && mv -f "$TMP/put" "$dest"
    say change "installed $2 (mode $3, $4)"
    CHANGED=1
    return 0
}
# put_dir DIR MODE USER:GROUP
put_dir() {
    local dest=$ROOT$1
    if [ -d "$dest" ] && meta_ok "$dest" "$2" "$3"; then
        ok "$1/"
        return 0
    fi
    if [ "$DRY" = 1 ]; then
        say dry-run "would create $1/ (mode $2, $3)"
        return 0
    fi
    mkdir -p "$dest"
    set_meta "$dest" "$2" "$3"
    say change "directory $1/ (mode $2, $3)"
    CHANGED=1
}

# --- 0. where we are ------------------------------------------------------------------------------
step_platform() {
    local codename="" arch
    if [ -f "$ROOT/etc/os-release" ]; then
        codename=$(sed -n 's/^VERSION_CODENAME=//p' "$ROOT/etc/os-release" | tr -d '"')
    fi
    arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
    if [ "$codename" = bookworm ]; then
        ok "platform: bookworm ($arch)${ROOT:+ in $ROOT}"
    else
        warn "platform: ${codename:-unknown} ($arch)${ROOT:+ in $ROOT}: written for Raspberry Pi OS / Debian bookworm"
    fi
}

# --- 1. Debian packages ---------------------------------------------------------------------------
step_packages() {
    local pkgs="python3 python3-venv ca-certificates" missing="" p
    [ "$BLUETOOTH" = 0 ] || pkgs="$pkgs bluez"
    if [ -n "$ROOT" ]; then
        skip "packages: not installed under --root (the image needs: $pkgs)"
        return 0
    fi
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
    done
    if [ -z "$missing" ]; then
        ok "packages: $pkgs"
        return 0
    fi
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    change "install packages:$missing" \
        env DEBIAN_FRONTEND=noninteractive sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends$missing"
}

# --- 2. the service user ---------------------------------------------------------------------------
step_user() {
    local want="$TMP/sysusers"
    if [ "$BLUETOOTH" = 1 ]; then
        cp "$REPO/deploy/systemd/ds4h-gateway.sysusers" "$want"
    else
        grep -v '^m ' "$REPO/deploy/systemd/ds4h-gateway.sysusers" >"$want"
    fi
    put_file "$want" "$SYSUSERS" 0644 root:root
    if [ -n "$(uid_of "$SVC_USER")" ] && { [ "$BLUETOOTH" = 0 ] || in_group "$SVC_USER" bluetooth; }; then
        ok "user $SVC_USER$([ "$BLUETOOTH" = 0 ] || echo ' (group bluetooth)')"
        return 0
    fi
    if [ -n "$ROOT" ]; then
        change "user $SVC_USER (systemd-sysusers --root)" systemd-sysusers --root="$ROOT"
    else
        change "user $SVC_USER (systemd-sysusers)" systemd-sysusers "$SYSUSERS"
    fi
}

# --- 3. directories ----------------------------------------------------------------------------
step_dirs() {
    put_dir "$ETC" 0750 "root:$SVC_USER"
    put_dir "$STATE" 0700 "$SVC_USER:$SVC_USER"
    put_dir "$PREFIX" 0755 root:root
}

# --- 4. the venv and the gateway ---------------------------------------------------------------
source_hash() {
    if [ -f "$SOURCE" ]; then
        sha256sum "$SOURCE"
    else
        (cd "$SOURCE" && find pyproject.toml gateway drivers firmware_sim -type f \
            \( -name '*.py' -o -name '*.toml' -o -name '*.json' \) -print0 | sort -z | xargs -0 sha256sum)
    fi | { cat; echo "extras=$EXTRAS"; } | sha256sum | cut -d' ' -f1
}
step_venv() {
    local spec="$SOURCE" hash
    if [ -n "$ROOT" ]; then
        skip "venv $VENV: a venv is not relocatable, create it on the target (run install.sh there)"
        return 0
    fi
    [ -z "$EXTRAS" ] || spec="${SOURCE}[${EXTRAS}]"
    if [ -x "$VENV/bin/python" ]; then
        ok "venv $VENV"
    else
        change "create the venv $VENV" python3 -m venv "$VENV"
    fi
    hash=$(source_hash)
    if [ -f "$VENV/.ds4h-source" ] && [ "$(cat "$VENV/.ds4h-source")" = "$hash" ]; then
        ok "ds4h-gateway installed in $VENV from $SOURCE"
        return 0
    fi
    change "pip install $spec into $VENV" "$VENV/bin/pip" install --quiet --upgrade "$spec"
    [ "$DRY" = 1 ] || echo "$hash" >"$VENV/.ds4h-source"
}

# --- 5. configuration --------------------------------------------------------------------------
step_config() {
    local name=$NAME ble=true
    [ -n "$name" ] || name=$(hostname -s 2>/dev/null || echo ds4h-gateway)
    [ "$BLUETOOTH" = 1 ] || ble=false
    put_file "$REPO/deploy/gateway.example.toml" "$ETC/gateway.example.toml" 0644 root:root
    if [ -f "$ROOT$ETC/gateway.toml" ]; then
        ok "$ETC/gateway.toml (kept: it is yours to edit)"
    else
        sed -e "s/@NAME@/$name/" -e "s/@BLE@/$ble/" "$HERE/gateway.toml" >"$TMP/gateway.toml"
        put_file "$TMP/gateway.toml" "$ETC/gateway.toml" 0640 "root:$SVC_USER"
    fi
    if [ -z "$ROOT" ] && [ -x "$VENV/bin/ds4h-gateway" ] && [ -f "$ETC/gateway.toml" ]; then
        if "$VENV/bin/ds4h-gateway" config check "$ETC/gateway.toml" >/dev/null; then
            ok "ds4h-gateway config check $ETC/gateway.toml"
        else
            warn "$ETC/gateway.toml does not validate (see above): fix it before starting the service"
        fi
    fi
}

# --- 6. BlueZ: LE Secure Connections only ------------------------------------------------------
step_bluez() {
    if [ "$BLUETOOTH" = 0 ]; then
        skip "bluez: --no-bluetooth"
        return 0
    fi
    local conf="$ROOT$BLUEZ_CONF"
    if [ -f "$conf" ]; then cp "$conf" "$TMP/main.conf.old"; else : >"$TMP/main.conf.old"; fi
    # SecureConnections = only right under [General] (any other SecureConnections line of that
    # section dropped), or a new [General] section at the end.
    awk '
        /^[[:space:]]*\[/ { ingen = ($0 ~ /^[[:space:]]*\[General\]/); print; if (ingen && !done) { print "SecureConnections = only"; done = 1 }; next }
        ingen && /^[[:space:]]*SecureConnections[[:space:]]*=/ { next }
        { print }
        END { if (!done) print "[General]\nSecureConnections = only" }
' "$TMP/main.conf.old" >"$TMP/main.conf"
    if [ -f "$conf" ] && cmp -s "$TMP/main.conf" "$conf"; then
        ok "$BLUEZ_CONF: SecureConnections = only"
        return 0
    fi
    if [ "$DRY" = 1 ]; then
        say dry-run "would set SecureConnections = only in [General] of $BLUEZ_CONF"
        return 0
    fi
    mkdir -p "$(dirname "$conf")"
    if [ -f "$conf" ] && [ ! -f "$conf.ds4h-orig" ]; then
        cp -p "$conf" "$conf.ds4h-orig"
    fi
    cat "$TMP/main.conf" >"$conf"
    say change "$BLUEZ_CONF: SecureConnections = only (the original is kept as $BLUEZ_CONF.ds4h-orig)"
    CHANGED=1
    if systemd_running; then
        change "restart bluetooth for the new setting" systemctl try-restart bluetooth.service
    fi
}

# --- 7. the state encryption key ----------------------------------------------------------------
new_key() { head -c 32 /dev/urandom | base64 -w0; echo; }
step_state_key() {
    if [ -n "$STATE_KEY_FILE" ]; then
        local dropin="$TMP/state-key.conf" key="$ROOT$STATE_KEY_FILE"
        {
            echo "# Written by deploy/pi/install.sh --state-key-file: the state key is read from another medium"
            echo "# (no TPM2 on this board; docs/security.md). The unit's TPM2 credential is replaced."
            echo "[Unit]"
            echo "RequiresMountsFor=$(dirname "$STATE_KEY_FILE")"
            echo "[Service]"
            echo "LoadCredentialEncrypted="
            echo "LoadCredential=state-key:$STATE_KEY_FILE"
        } >"$dropin"
        put_file "$dropin" "$DROPIN_DIR/state-key.conf" 0644 root:root
        if [ -f "$key" ]; then
            ok "state key $STATE_KEY_FILE (kept)"
        elif [ "$DRY" = 1 ]; then
            say dry-run "would create the state key $STATE_KEY_FILE (32 random bytes, base64, mode 0600)"
        else
            mkdir -p "$(dirname "$key")"
            (umask 077 && new_key >"$key")
            say change "created the state key $STATE_KEY_FILE (mode 0600): back it up apart from the card"
            CHANGED=1
        fi
        if [ -d "$(dirname "$key")" ] && [ -d "$ROOT/var/lib" ] &&
            [ "$(stat -c %d "$(dirname "$key")")" = "$(stat -c %d "$ROOT/var/lib")" ]; then
            warn "state key $STATE_KEY_FILE is on the same file system as $STATE: a stolen card gives away both"
        fi
        return 0
    fi
    put_dir "$CREDSTORE" 0700 root:root
    if [ -f "$ROOT$CREDSTORE/state-key" ]; then
        ok "state key $CREDSTORE/state-key"
    elif [ -n "$ROOT" ]; then
        skip "state key: systemd-creds seals it with the target's TPM2: run install.sh there, or pass --state-key-file"
    elif [ -e /dev/tpmrm0 ]; then
        if [ "$DRY" = 1 ]; then
            say dry-run "would seal a new state key with the TPM2: systemd-creds encrypt --with-key=tpm2 --name=state-key - $CREDSTORE/state-key"
        else
            new_key | systemd-creds encrypt --with-key=tpm2 --name=state-key - "$CREDSTORE/state-key"
            say change "sealed a new state key with the TPM2 in $CREDSTORE/state-key"
            warn "that key exists only inside this board's TPM2: for a backup, seal a key you keep offline instead (docs/operate.md)"
            CHANGED=1
        fi
    else
        warn "no state key and no TPM2: re-run with --state-key-file /media/<usb-key>/ds4h-state.key (docs/operate.md); the service cannot start without it"
    fi
}

# --- 8. the systemd service ------------------------------------------------------------------
step_service() {
    put_file "$REPO/deploy/systemd/ds4h-gateway.service" "$UNIT" 0644 root:root
    if [ -n "$ROOT" ]; then
        if systemctl --root="$ROOT" is-enabled --quiet ds4h-gateway.service 2>/dev/null; then
            ok "ds4h-gateway.service enabled"
        else
            change "enable ds4h-gateway.service" systemctl --root="$ROOT" --quiet enable ds4h-gateway.service
        fi
        return 0
    fi
    if [ "$RELOAD" = 1 ] && systemd_running; then
        change "reload systemd" systemctl daemon-reload
    fi
    if systemctl is-enabled --quiet ds4h-gateway.service 2>/dev/null; then
        ok "ds4h-gateway.service enabled"
    else
        change "enable ds4h-gateway.service" systemctl --quiet enable ds4h-gateway.service
    fi
    if [ "$START" = 1 ]; then
        if [ "$CHANGED" = 1 ] || [ "$DRY" = 1 ]; then
            change "(re)start ds4h-gateway.service" systemctl restart ds4h-gateway.service
        elif systemctl is-active --quiet ds4h-gateway.service; then
            ok "ds4h-gateway.service running"
        else
            change "start ds4h-gateway.service" systemctl start ds4h-gateway.service
        fi
    fi
}

[ "$DRY" = 0 ] || say dry-run "nothing is changed${ROOT:+ in $ROOT}"
step_platform
step_packages
step_user
step_dirs
step_venv
step_config
step_bluez
step_state_key
step_service
if [ "$DRY" = 1 ]; then
    say "done" "dry run: nothing was changed"
elif [ "$CHANGED" = 1 ]; then
    say "done" "installed${ROOT:+ into $ROOT}; next steps: docs/operate.md"
else
    say "done" "nothing to do: everything was already in place"
fi

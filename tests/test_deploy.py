"""deploy/: the systemd unit verifies, the Pi install script is idempotent and its dry run changes
nothing, the shell scripts pass shellcheck, the compose stack validates (where a compose
implementation is installed) and holds no default password. The tools come from `make services`
(systemd, shellcheck, docker-compose); without one a test skips and says which."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.config import load_config
from gateway.state.statekey import parse_keys

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "ds4h-gateway.service"
INSTALL = ROOT / "deploy" / "pi" / "install.sh"
DOCKER = ROOT / "deploy" / "docker"
EXEC_START = "/opt/ds4h-gateway/venv/bin/ds4h-gateway"
KEY_PATH = "/media/ds4h-key/state.key"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (make services installs it)")
    return path


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kw)  # type: ignore[call-overload, no-any-return]


# --- systemd unit --------------------------------------------------------------------------------
def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def render_unit(dest: Path, unit_text: str | None = None) -> Path:
    """The unit with ExecStart pointing at an executable the test made (verify checks it exists)."""
    exe = dest / "bin" / "ds4h-gateway"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = (unit_text if unit_text is not None else UNIT.read_text()).replace(EXEC_START, str(exe))
    path = dest / "ds4h-gateway.service"
    path.write_text(text)
    return path


def verify(unit: Path) -> None:
    r = run([need("systemd-analyze"), "verify", str(unit)])
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "ds4h-gateway" in line]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


def test_unit_hardening() -> None:
    s = settings(UNIT.read_text())
    expect = {
        "Type": ["exec"],
        "User": ["ds4h"],
        "StateDirectory": ["ds4h-gateway"],
        "StateDirectoryMode": ["0700"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "PrivateDevices": ["yes"],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],
        "AmbientCapabilities": [""],
        "MemoryDenyWriteExecute": ["yes"],
        "Restart": ["on-failure"],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"],
        "LoadCredentialEncrypted": ["state-key:/etc/credstore.encrypted/state-key"],
        "UMask": ["0077"],
    }
    for key, value in expect.items():
        assert s.get(key) == value, (key, s.get(key))
    assert s["ExecStart"] == [f"{EXEC_START} run --config /etc/ds4h-gateway/gateway.toml"]
    filt = s["SystemCallFilter"][0].split()
    assert filt[0] == "@system-service" and "adjtimex" in filt  # the clock-sync read (gateway/clock.py)
    assert "ProtectClock" not in s  # it would refuse that read too
    assert "AF_BLUETOOTH" not in UNIT.read_text().split("[Service]")[1].split("RestrictAddressFamilies=")[1].split()[0]
    # the unit's state directory is the config's default, and the example config's key credential is the unit's
    example = load_config(ROOT / "deploy" / "gateway.example.toml", environ={})
    assert str(example.gateway.state_dir) == "/var/lib/ds4h-gateway" and example.crypto.key_credential == "state-key"


def test_unit_verifies(tmp_path: Path) -> None:
    verify(render_unit(tmp_path))


@pytest.mark.parametrize("dropin", ["bumble-hci-socket.conf", "bumble-usb.conf"])
def test_unit_with_a_bumble_dropin_verifies(tmp_path: Path, dropin: str) -> None:
    unit = render_unit(tmp_path)
    d = tmp_path / "ds4h-gateway.service.d"
    d.mkdir()
    shutil.copy(SYSTEMD / dropin, d / dropin)
    verify(unit)
    s = settings((SYSTEMD / dropin).read_text())
    if dropin == "bumble-hci-socket.conf":  # the HCI user channel: AF_BLUETOOTH and CAP_NET_ADMIN only here
        assert s["RestrictAddressFamilies"][-1].split()[-1] == "AF_BLUETOOTH"
        assert s["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"]
    else:
        assert s["DeviceAllow"] == ["char-usb_device rw"] and "RestrictAddressFamilies" not in s


def test_unit_exposure_score(tmp_path: Path) -> None:
    r = run([need("systemd-analyze"), "security", "--offline=yes", str(render_unit(tmp_path))])
    m = re.search(r"Overall exposure level for ds4h-gateway\.service: (\d+\.\d+)", r.stdout + r.stderr)
    if m is None:
        pytest.skip(f"systemd-analyze security --offline is not available here: {r.stderr.strip()[:200]}")
    assert float(m.group(1)) <= 2.5, r.stdout


# --- install.sh ----------------------------------------------------------------------------------
def install(*args: str) -> subprocess.CompletedProcess[str]:
    r = run(["bash", str(INSTALL), *args])
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        else:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, digest, st.st_mtime_ns)
    return out


def test_shell_scripts_pass_shellcheck() -> None:
    tool = need("shellcheck")
    scripts = [INSTALL, DOCKER / "make-secrets.sh", DOCKER / "broker-setup.sh"]
    r = run([tool, *map(str, scripts)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_install_dry_run_prints_every_action_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    out = install("--dry-run", "--root", str(root), "--state-key-file", KEY_PATH, "--name", "ward-3").stdout
    assert list(root.iterdir()) == []
    for action in (
        "would install /etc/sysusers.d/ds4h-gateway.conf",
        "would user ds4h (systemd-sysusers --root)",
        "would create /etc/ds4h-gateway/",
        "would create /var/lib/ds4h-gateway/",
        "would install /etc/ds4h-gateway/gateway.toml",
        "would set SecureConnections = only in [General] of /etc/bluetooth/main.conf",
        "would install /etc/systemd/system/ds4h-gateway.service.d/state-key.conf",
        f"would create the state key {KEY_PATH}",
        "would install /etc/systemd/system/ds4h-gateway.service",
        "would enable ds4h-gateway.service",
        "[skip]     packages",
        "[skip]     venv",
        "dry run: nothing was changed",
    ):
        assert action in out, f"{action!r} not in:\n{out}"
    assert "[change]" not in out


def test_install_dry_run_on_this_machine_only_reports(tmp_path: Path) -> None:
    """Without --root the dry run looks at the real system (dpkg, systemctl) and reports only."""
    watched = [Path(p) for p in ("/etc/ds4h-gateway", "/opt/ds4h-gateway", "/etc/systemd/system/ds4h-gateway.service")]
    before = [p.exists() for p in watched]
    r = run(["bash", str(INSTALL), "--dry-run", "--name", "ward-3"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[change]" not in r.stdout and "dry run: nothing was changed" in r.stdout
    assert "venv /opt/ds4h-gateway/venv" in r.stdout and "ds4h-gateway.service" in r.stdout
    assert [p.exists() for p in watched] == before


@pytest.mark.skipif(os.geteuid() != 0, reason="the fake-root install sets owners (chown): run as root")
def test_install_into_a_fake_root_twice_is_idempotent(tmp_path: Path) -> None:
    need("systemd-sysusers")
    need("systemctl")
    root = tmp_path / "root"
    (root / "etc" / "bluetooth").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    main_conf = (
        "[General]\n#SecureConnections = on\nName = ward-3\nSecureConnections = on\n\n[Policy]\nAutoEnable=true\n"
    )
    (root / "etc" / "bluetooth" / "main.conf").write_text(main_conf)
    args = ("--root", str(root), "--state-key-file", KEY_PATH, "--name", "ward-3")

    first = install(*args).stdout
    assert "[change]" in first and "installed into" in first
    after_first = snapshot(root)
    second = install(*args).stdout
    assert "[change]" not in second and "nothing to do: everything was already in place" in second, second
    assert snapshot(root) == after_first
    dry = install("--dry-run", *args).stdout
    assert "would " not in dry, dry

    # the user, in the bluetooth group (BlueZ's D-Bus policy)
    passwd = (root / "etc" / "passwd").read_text()
    assert re.search(r"^ds4h:x:\d+:\d+:[^:]*:/var/lib/ds4h-gateway:/usr/sbin/nologin$", passwd, re.M)
    assert re.search(r"^bluetooth:x:\d+:(.*,)?ds4h(,.*)?$", (root / "etc" / "group").read_text(), re.M)
    uid = int(passwd.split("ds4h:x:")[1].split(":")[0])
    state = root / "var" / "lib" / "ds4h-gateway"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700 and state.stat().st_uid == uid
    # BlueZ: LE Secure Connections only, once, in [General]; the original kept
    conf = (root / "etc" / "bluetooth" / "main.conf").read_text()
    general = conf.split("[Policy]")[0]
    assert re.findall(r"^SecureConnections\s*=.*$", general, re.M) == ["SecureConnections = only"]
    assert "AutoEnable=true" in conf and "Name = ward-3" in conf
    assert (root / "etc" / "bluetooth" / "main.conf.ds4h-orig").read_text() == main_conf
    # the config validates and names the credential the unit loads
    cfg_path = root / "etc" / "ds4h-gateway" / "gateway.toml"
    assert stat.S_IMODE(cfg_path.stat().st_mode) == 0o640
    cfg = load_config(cfg_path, environ={})
    assert cfg.gateway.name == "ward-3" and cfg.crypto.key_credential == "state-key" and cfg.ble.enabled
    assert load_config(root / "etc" / "ds4h-gateway" / "gateway.example.toml", environ={})
    # the state key on "another medium": a valid key, owner only; the drop-in loads it instead of the TPM2 one
    key = root / KEY_PATH.lstrip("/")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(parse_keys(key.read_bytes(), str(key))) == 1
    dropin = root / "etc" / "systemd" / "system" / "ds4h-gateway.service.d" / "state-key.conf"
    s = settings(dropin.read_text())
    assert s["LoadCredentialEncrypted"] == [""] and s["LoadCredential"] == [f"state-key:{KEY_PATH}"]
    assert s["RequiresMountsFor"] == ["/media/ds4h-key"]
    # the installed unit is the repository's, enabled; with its drop-in it verifies
    unit = root / "etc" / "systemd" / "system" / "ds4h-gateway.service"
    assert unit.read_text() == UNIT.read_text()
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "ds4h-gateway.service"
    assert os.readlink(wants) == "/etc/systemd/system/ds4h-gateway.service"
    check = tmp_path / "verify"
    check.mkdir()
    rendered = render_unit(check)
    (check / "ds4h-gateway.service.d").mkdir()
    shutil.copy(dropin, check / "ds4h-gateway.service.d" / "state-key.conf")
    verify(rendered)


def test_install_refuses_bad_arguments(tmp_path: Path) -> None:
    for args in (["--state-key-file", "relative/key"], ["--name", "a/b"], ["--bogus"]):
        r = run(["bash", str(INSTALL), "--dry-run", "--root", str(tmp_path), *args])
        assert r.returncode == 2, (args, r.stdout, r.stderr)


def test_pi_config_template_validates(tmp_path: Path) -> None:
    for ble in ("true", "false"):
        text = (ROOT / "deploy" / "pi" / "gateway.toml").read_text().replace("@NAME@", "ward-3").replace("@BLE@", ble)
        (tmp_path / "gateway.toml").write_text(text)
        cfg = load_config(tmp_path / "gateway.toml", environ={})
        assert cfg.ble.enabled is (ble == "true") and cfg.crypto.key_credential == "state-key"


# --- Docker ----------------------------------------------------------------------------------------
def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.skip(
        "neither the docker compose plugin nor docker-compose is installed (make services installs docker-compose)"
    )


def test_compose_config_validates() -> None:
    r = run([*compose_command(), "-f", str(DOCKER / "compose.yaml"), "config", "-q"], cwd=DOCKER)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_stack_has_no_default_passwords_and_mounts_the_dashboards() -> None:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = doc["services"]
    assert {"gateway", "mosquitto", "influxdb", "grafana", "pki-init"} <= set(services)
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|TOKEN|SECRET|KEY", key) and not key.endswith("_FILE"):
                pytest.fail(f"{name}: {key}={value!r}: secrets come from files (compose secrets)")
    for name, secret in doc["secrets"].items():
        assert secret == {"file": f"./secrets/{name}"}, name
    assert "secrets/" in (DOCKER / ".gitignore").read_text()
    grafana = services["grafana"]["volumes"]
    assert "../../dashboards/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "../../dashboards:/var/lib/grafana/dashboards:ro" in grafana
    assert (
        services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    )
    gw = services["gateway"]
    assert gw["environment"]["CREDENTIALS_DIRECTORY"] == "/run/secrets" and "state_key" in gw["secrets"]
    assert services["mosquitto"]["ports"] == ["8883:8883"] and "ports" not in services["influxdb"]
    cfg = load_config(DOCKER / "gateway.toml", environ={})
    assert cfg.crypto.key_credential == "state_key" and cfg.sinks.influx is not None
    assert str(cfg.sinks.influx.token_file) == "/run/secrets/influx_gateway_token"


def test_dockerfile_runs_as_non_root() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ":latest" not in text and "slim-bookworm" in text


def test_make_secrets_creates_random_private_files_once(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    r = run(["bash", str(DOCKER / "make-secrets.sh"), "--dir", str(d), "--no-chown"])
    assert r.returncode == 0, r.stderr
    names = {"state_key", "influx_admin_password", "influx_admin_token", "grafana_admin_password"}
    assert {p.name for p in d.iterdir()} == names
    for p in d.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o400, p
    values = {p.read_text() for p in d.iterdir()}
    assert len(values) == len(names)
    assert len(parse_keys((d / "state_key").read_bytes(), "state_key")) == 1
    before = {p.name: p.read_text() for p in d.iterdir()}
    r = run(["bash", str(DOCKER / "make-secrets.sh"), "--dir", str(d), "--no-chown"])
    assert r.returncode == 0 and "[created]" not in r.stdout
    assert {p.name: p.read_text() for p in d.iterdir()} == before


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))

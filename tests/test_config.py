"""Config: validation errors name the key path and the file; env overrides; CLI check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import apply_env, load_config
from gateway.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gw.toml"
    p.write_text(text)
    return p


def test_defaults_load_once_encryption_is_decided() -> None:
    with pytest.raises(ConfigError, match=r"<defaults>: \[encryption\] is missing: say where the state encryption key"):
        load_config(None, {})
    cfg = load_config(None, {"DS4H_ENCRYPTION__INSECURE_KEY_ON_DISK": "true"})
    assert cfg.crypto.enabled and cfg.crypto.insecure_key_on_disk
    assert cfg.outbox.synchronous == "FULL"
    assert cfg.provenance.archive_retention_days == 30
    assert cfg.sinks.influx is None


def test_unknown_key_names_path_and_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[outbox]\nsynchronus = 'FULL'\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, {})
    assert f"{p}: outbox.synchronus: unknown key" in str(e.value)


def test_bad_value_names_path_and_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[sinks.influx]\nurl = 'ftp://tsdb'\n[outbox]\ngroup_commit_max_batches = 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, {})
    msg = str(e.value)
    assert f"{p}: sinks.influx.url" in msg
    assert f"{p}: outbox.group_commit_max_batches" in msg


def test_bad_device_id_and_unknown_device_key(tmp_path: Path) -> None:
    p = write(tmp_path, "[devices.Bad_Id]\nkind = 'cgm'\n")
    with pytest.raises(ConfigError, match="Bad_Id"):
        load_config(p, {})
    p = write(tmp_path, "[devices.cgm-1]\nkind = 'cgm'\ncolour = 'red'\n")
    with pytest.raises(ConfigError, match=r"devices\.cgm-1\.colour: unknown key"):
        load_config(p, {})


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[outbox\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p, {})
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml", {})


def test_env_overrides_every_key(tmp_path: Path) -> None:
    p = write(tmp_path, "[outbox]\nsynchronous = 'FULL'\n")
    env = {
        "DS4H_OUTBOX__SYNCHRONOUS": "NORMAL",
        "DS4H_OUTBOX__DISK_BUDGET_MB": "512",
        "DS4H_SINKS__INFLUX__URL": "https://tsdb.example:8086",
        "DS4H_DEVICES__CGM-7__KIND": "cgm",
        "DS4H_WEB__PORT": "0",
        "DS4H_ENCRYPTION__ENABLED": "false",
        "UNRELATED": "x",
    }
    cfg = load_config(p, env)
    assert cfg.outbox.synchronous == "NORMAL"
    assert cfg.outbox.disk_budget_mb == 512
    assert cfg.sinks.influx is not None and cfg.sinks.influx.url == "https://tsdb.example:8086"
    assert cfg.devices["cgm-7"].kind == "cgm"
    assert not cfg.crypto.enabled
    with pytest.raises(ConfigError, match=r"web\.port"):
        load_config(p, {"DS4H_WEB__PORT": "-1"})


def test_env_cannot_replace_a_table_by_a_value() -> None:
    with pytest.raises(ConfigError, match="DS4H_OUTBOX__X__Y"):
        apply_env({"outbox": {"x": 1}}, {"DS4H_OUTBOX__X__Y": "2"})


def test_cli_config_check(tmp_path: Path) -> None:
    good = write(tmp_path, "[gateway]\nstate_dir = 'state'\n[encryption]\nkey_credential = 'state-key'\n")
    r = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "config", "check", str(good)], capture_output=True, text=True
    )
    assert r.returncode == 0 and "ok" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\nstate_dirr = 'x'\n")
    r = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "config", "check", str(bad)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert f"{bad}: gateway.state_dirr: unknown key" in r.stderr


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("[encryption]\n", "encryption: encryption at rest needs a key: set key_credential, key_file or key_url"),
        (
            "[encryption]\nkey_file = '/k'\nkey_credential = 'k'\n",
            "set one key source, not key_credential and key_file",
        ),
        ("[encryption]\nkey_url = 'https://keys.example/k'\n", "key_url needs key_url_token_file"),
        ("[encryption]\nkey_url = 'http://keys.example/k'\nkey_url_token_file = '/t'\n", "encryption.key_url"),
    ],
)
def test_encryption_key_source_errors_name_the_key(tmp_path: Path, section: str, message: str) -> None:
    p = write(tmp_path, section)
    with pytest.raises(ConfigError) as e:
        load_config(p, {})
    assert f"{p}: " in str(e.value) and message in str(e.value)

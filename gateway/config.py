"""The gateway's configuration: one TOML file, validated by pydantic, overridable from the environment.

Every key is also settable as ``DS4H_<SECTION>__<KEY>`` (nested keys joined by ``__``), e.g.
``DS4H_OUTBOX__SYNCHRONOUS=NORMAL`` or ``DS4H_SINKS__INFLUX__URL=https://tsdb:8086``. Values are parsed
as TOML values when they parse (numbers, booleans, arrays), else taken as strings.
Unknown keys and bad values are errors that name the key path and the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from gateway.errors import ConfigError
from gateway.model import check_device_id
from gateway.vocabulary import METRICS

ENV_PREFIX = "DS4H_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    name: str = "ds4h-gateway"
    """Human-readable gateway name (shown on the status page and in logs)."""
    state_dir: Path = Path("/var/lib/ds4h-gateway")
    """Where the gateway keeps its key, outbox, registry, history and control token."""
    clock: Literal["auto", "synced", "unsynced"] = "auto"
    """``auto`` asks the kernel whether the clock is synchronised; the others force the answer."""
    clock_skew_tolerance_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    """A device's clock offset is re-estimated only when a new sample departs from it by more than this."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    """``auto``: JSON lines when stderr is not a terminal (systemd/journald), a readable format on a terminal."""
    shutdown_flush_s: Annotated[float, Field(ge=0, le=300)] = 10.0
    """On SIGTERM/SIGINT: how long sinks may keep forwarding before the gateway exits."""


class DeviceEntry(_Section):
    kind: str
    """Device kind/profile, e.g. ``heart_rate``, ``cgm``, ``glucose_meter``, ``ecg``, ``pulse_oximeter``."""
    mqtt_cn: str | None = None
    mqtt_username: str | None = None
    ble_address: str | None = None
    serial: str | None = None
    public_key: str | None = None
    """Device signing key as a did:key (used when the device signs its own payloads)."""
    require_signature: bool = False
    """Refuse this device's unsigned MQTT frames (``signature_missing``); docs/mqtt.md."""
    enabled: bool = True


class PriorityRule(_Section):
    metric: str
    below: float | None = None
    above: float | None = None
    unit: str | None = None
    """Apply the rule only to readings in this unit (None: any unit)."""

    @model_validator(mode="after")
    def _check(self) -> PriorityRule:
        m = METRICS.get(self.metric)
        if m is None or m.waveform or m.spectrum:
            raise ValueError(f"metric {self.metric!r} is not a scalar metric of docs/schema.md")
        if m.research_only:
            raise ValueError(
                f"metric {self.metric!r} is research-only (docs/research-sensor.md): it never makes a batch urgent"
            )
        if self.below is None and self.above is None:
            raise ValueError("set below and/or above")
        if self.unit is not None and self.unit not in m.units:
            raise ValueError(f"unit {self.unit!r} is not one of {', '.join(m.units)}")
        return self


def _default_rules() -> tuple[PriorityRule, ...]:
    return (
        PriorityRule(metric="glucose_isf", below=70, unit="mg/dL"),
        PriorityRule(metric="glucose_isf", below=3.9, unit="mmol/L"),
        PriorityRule(metric="glucose_capillary_whole_blood", below=70, unit="mg/dL"),
        PriorityRule(metric="glucose_capillary_whole_blood", below=3.9, unit="mmol/L"),
        PriorityRule(metric="glucose_isf", above=250, unit="mg/dL"),
        PriorityRule(metric="spo2", below=90),
        PriorityRule(metric="heart_rate", below=40),
        PriorityRule(metric="heart_rate", above=150),
    )


class OutboxSection(_Section):
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """SQLite synchronous mode. FULL survives power loss; NORMAL only process crashes."""
    group_commit_max_delay_ms: Annotated[float, Field(ge=0, le=1000)] = 1.0
    group_commit_max_batches: Annotated[int, Field(ge=1, le=100_000)] = 2000
    group_commit_max_points: Annotated[int, Field(ge=1)] = 50_000
    """A group commit also stops taking submissions at this many points (bounds memory and commit time)."""
    queue_batches: Annotated[int, Field(ge=1, le=1_000_000)] = 20_000
    """Bounded queue in front of the committer: a full queue back-pressures the sources."""
    hot_cache_points: Annotated[int, Field(ge=0)] = 10_000
    """Committed points kept in memory until every sink has them, so forwarders need not decode them."""
    disk_budget_mb: Annotated[float, Field(gt=0)] = 2048.0
    """Outbox + provenance archive + local history. Over it: prune delivered data, then back-pressure."""
    priority_rules: tuple[PriorityRule, ...] = Field(default_factory=_default_rules)
    """Readings matching a rule (or flagged ``alert`` by the device) put their batch in the urgent lane."""


class InfluxSinkSection(_Section):
    url: str
    org: str = "ds4h"
    bucket: str = "ds4h"
    token: str | None = None
    token_file: Path | None = None
    """A file holding the API token (preferred over ``token``: keeps secrets out of the config)."""
    verify_tls: bool = True
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    max_batches_per_write: Annotated[int, Field(ge=1)] = 5000
    max_points_per_write: Annotated[int, Field(ge=1)] = 50_000
    """A forwarding round holds at most this many points (bounds memory when draining a backlog)."""
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    parallel_writes: Annotated[int, Field(ge=1, le=16)] = 2
    """Request bodies of one forwarding round in flight at once."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class LocalSinkSection(_Section):
    retention_days: Annotated[float, Field(gt=0)] = 30.0
    max_batches_per_write: Annotated[int, Field(ge=1)] = 5000
    max_points_per_write: Annotated[int, Field(ge=1)] = 50_000


class SinksSection(_Section):
    influx: InfluxSinkSection | None = None
    local: LocalSinkSection = LocalSinkSection()
    retry_initial_s: Annotated[float, Field(gt=0)] = 0.5
    retry_max_s: Annotated[float, Field(gt=0)] = 60.0
    linger_ms: Annotated[float, Field(ge=0, le=10_000)] = 50.0
    """A small bulk round waits this long for more committed batches before it is written (urgent ones never
    wait): fewer, larger writes to the store."""


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class MqttSection(_Section):
    """The MQTT source: 5G/cellular devices publish SenML to a broker the gateway subscribes to (docs/mqtt.md)."""

    enabled: bool = False
    """Subscribe to the broker below. Off by default: a gateway without 5G devices needs no broker."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8883
    tls: bool = True
    """TLS to the broker. Off is allowed only for a broker on the loopback interface."""
    ca_file: Path | None = None
    """The site CA that signed the broker's certificate; default ``<state_dir>/pki/ca.crt``."""
    cert_file: Path | None = None
    """The gateway's client certificate (mutual TLS); default ``<state_dir>/pki/gateway.crt``."""
    key_file: Path | None = None
    """Its private key (mode 0600); default ``<state_dir>/pki/gateway.key``."""
    username: str | None = None
    """Only for a broker with password logins instead of client certificates."""
    password_file: Path | None = None
    """File holding the password for ``username`` (never the password itself in the config)."""
    client_id: Annotated[str, Field(min_length=1, max_length=64)] = "ds4h-gateway"
    """Fixed client id: with a persistent session the broker keeps QoS 1 messages while the gateway is down."""
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    """``auto`` tries MQTT v5 and falls back to 3.1.1 when the broker refuses v5."""
    session_expiry_s: Annotated[int, Field(ge=60, le=4_294_967_295)] = 7 * 86400
    """How long the broker keeps the gateway's session (and queued messages) while it is disconnected."""
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 2000
    """Un-acknowledged QoS 1 messages the broker may have in flight to the gateway (MQTT v5 Receive Maximum).
    Throughput ≤ this ÷ commit latency, so it must cover several group commits."""
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    connect_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    reconnect_initial_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_payload_bytes: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)] = 64 * 1024
    """Larger messages are quarantined (reason ``too_large``) and acknowledged."""
    max_ahead_s: Annotated[float, Field(ge=0, le=86400)] = 300.0
    """A reading time further than this in the future is quarantined (``bad_time``)."""
    ack_interval_ms: Annotated[float, Field(ge=1, le=60_000)] = 50.0
    """Device ack watermarks are published at most this often per device."""
    ack_boot_ttl_s: Annotated[float, Field(gt=0)] = 3600.0
    """A boot stays in a device's ack message this long after its last frame."""
    ack_max_boots: Annotated[int, Field(ge=1, le=64)] = 4
    """At most this many boots per device in its ack message (the most recent)."""
    replay_window: Annotated[int, Field(ge=1, le=2**32)] = 65_536
    """Device-signed frames: a seq this far below its boot's highest seq is refused (``stale``)."""
    boot_grace_s: Annotated[float, Field(gt=0)] = 3600.0
    """Device-signed frames: an older boot's frames are refused (``stale``) this long after a newer boot began."""

    @model_validator(mode="after")
    def _checks(self) -> MqttSection:
        if not self.tls and self.host not in _LOOPBACK_HOSTS:
            raise ValueError(f"mqtt.tls: TLS is required for a broker that is not on loopback ({self.host})")
        if (self.username is None) != (self.password_file is None) and self.password_file is not None:
            raise ValueError("mqtt.password_file: set mqtt.username too")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("mqtt.reconnect_max_s must be ≥ mqtt.reconnect_initial_s")
        return self


class BleSection(_Section):
    """The BLE source: scanning, connection slots, reconnects and pairing policy (docs/ble.md)."""

    enabled: bool = False
    """Scan for and connect to the registered BLE devices. Off by default."""
    backend: Literal["bluez", "bumble"] = "bluez"
    """``bluez``: bleak on the host's BlueZ (production). ``bumble``: bleak on Google's bumble stack over
    ``bumble_transport`` (a virtual radio for tests and the demo, or a USB dongle without BlueZ)."""
    adapter: str = "hci0"
    """BlueZ adapter (``bluez`` backend)."""
    bumble_transport: str | None = None
    """bumble transport spec (``bumble`` backend), e.g. ``tcp-client:127.0.0.1:7654`` or ``usb:0``."""
    max_connections: Annotated[int, Field(ge=1, le=64)] = 5
    """Simultaneous connections (BlueZ adapters handle only a handful well)."""
    store_slots: Annotated[int, Field(ge=0, le=64)] = 1
    """Slots kept free of streaming devices for store-and-forward turns (glucose meters), when any are
    registered and ``max_connections`` > 1."""
    scan_mode: Literal["passive", "active"] = "passive"
    """Passive unless a driver needs scan responses."""
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    gatt_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    """Every read, write and control-point response is awaited at most this long."""
    racp_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    """A record transfer (RACP) with no progress for this long is aborted; what arrived is committed."""
    store_turn_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """Longest turn of a store-and-forward device before it yields its slot."""
    store_interval_s: Annotated[float, Field(ge=0, le=86400)] = 60.0
    """A store-and-forward device gets a new turn at most this often after a complete one."""
    reconnect_initial_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    seen_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """A device not advertised for this long is considered out of range (no connect attempts)."""
    min_key_size: Annotated[int, Field(ge=7, le=16)] = 16
    """Pairing keys shorter than this are refused."""
    secure_connections_only: bool = True
    """Refuse legacy pairing (LE Secure Connections only)."""

    @model_validator(mode="after")
    def _checks(self) -> BleSection:
        if self.backend == "bumble" and not self.bumble_transport:
            raise ValueError("backend 'bumble' needs bumble_transport (e.g. tcp-client:127.0.0.1:7654)")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self


class ProvenanceSection(_Section):
    archive_retention_days: Annotated[float, Field(ge=0)] = 30.0
    """How long signed envelopes stay in the provenance archive after every sink has them."""
    key_credential: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,254}$")] | None = None
    """Name of a systemd credential holding the gateway key (``$CREDENTIALS_DIRECTORY/<name>``, read only);
    unset: ``<state_dir>/gateway.key``."""


class EncryptionSection(_Section):
    """Encryption at rest of the state databases (docs/security.md): where the AES-256 key comes from."""

    enabled: bool = True
    key_credential: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,254}$")] | None = None
    """A systemd credential (``LoadCredential=`` / ``LoadCredentialEncrypted=``, sealed with TPM2 where the
    board has one): ``$CREDENTIALS_DIRECTORY/<name>``."""
    key_file: Path | None = None
    """A key file on another medium than the state directory (refused on the same file system unless
    ``insecure_key_on_disk``)."""
    key_url: Annotated[str, Field(pattern=r"^https://")] | None = None
    """A key service, fetched once at start (HTTPS GET, bearer token from ``key_url_token_file``)."""
    key_url_token_file: Path | None = None
    key_url_ca_file: Path | None = None
    """CA bundle that signs the key service's certificate (default: the system's)."""
    key_url_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    insecure_key_on_disk: bool = False
    """Allow the key beside the data: ``<state_dir>/state.key`` (created if missing), or a ``key_file`` on the
    state directory's file system. Defeats the purpose against a stolen card; warned about at every start."""
    reseal_rows_per_pass: Annotated[int, Field(ge=0, le=1_000_000)] = 20_000
    """After a key rotation: rows re-encrypted with the current key per housekeeping pass (0: never)."""

    @model_validator(mode="after")
    def _one_source(self) -> EncryptionSection:
        sources = [k for k in ("key_credential", "key_file", "key_url") if getattr(self, k) is not None]
        if len(sources) > 1:
            raise ValueError(f"set one key source, not {' and '.join(sources)}")
        if self.enabled and not sources and not self.insecure_key_on_disk:
            raise ValueError(
                "encryption at rest needs a key: set key_credential, key_file or key_url "
                "(or insecure_key_on_disk = true for a demo, or enabled = false)"
            )
        if self.key_url is not None and self.key_url_token_file is None:
            raise ValueError("key_url needs key_url_token_file")
        return self


class ResearchSection(_Section):
    """The research path (docs/consent.md): consent-filtered, pseudonymised copy of the data, its store and the
    FHIR Observation endpoint."""

    enabled: bool = False
    """Run the ``research`` sink (own outbox cursor) and the FHIR endpoint. Off: no research copy at all."""
    store: InfluxSinkSection | None = None
    """The research store (InfluxDB v2 API), separate from the care store; unset: the research sink only records
    its consent decisions (the endpoint and ``dataspace export`` still serve eligible data)."""
    pseudonym_key_credential: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,254}$")] | None = None
    """A systemd credential holding the pseudonym key material (``$CREDENTIALS_DIRECTORY/<name>``)."""
    pseudonym_key_file: Path | None = None
    """A pseudonym key file (mode 0600, on another medium than the state directory unless
    ``insecure_key_on_disk``)."""
    insecure_key_on_disk: bool = False
    """Allow the pseudonym key beside the data: ``<state_dir>/pseudonym.key`` (created if missing, sealed with the
    state key when encryption is on), or a ``pseudonym_key_file`` on the state directory's file system (the demo)."""
    endpoint: bool = True
    """Serve ``GET /dataspace/v1/observations`` on the control server (token in ``endpoint_token_file``)."""
    endpoint_token_file: Path | None = None
    """The endpoint's bearer token (not the control token); unset: ``<state_dir>/research.token``, created 0600."""
    page_size: Annotated[int, Field(ge=1, le=10_000)] = 200
    """Observations per Bundle page when the request gives no ``_count``."""
    max_page_size: Annotated[int, Field(ge=1, le=100_000)] = 2000
    """Largest ``_count`` a request may ask for."""

    @model_validator(mode="after")
    def _one_key_source(self) -> ResearchSection:
        if self.pseudonym_key_credential is not None and self.pseudonym_key_file is not None:
            raise ValueError("set one pseudonym key source, not pseudonym_key_credential and pseudonym_key_file")
        if (
            self.enabled
            and self.pseudonym_key_credential is None
            and self.pseudonym_key_file is None
            and not self.insecure_key_on_disk
        ):
            raise ValueError(
                "the research path needs a pseudonym key: set pseudonym_key_credential or pseudonym_key_file "
                "(or insecure_key_on_disk = true for a demo)"
            )
        if self.page_size > self.max_page_size:
            raise ValueError("page_size must be <= max_page_size")
        return self


_EDC_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class EdcSection(_Section):
    """The Eclipse Dataspace Connector the gateway provisions its asset in (docs/dataspace.md)."""

    management_url: str | None = None
    """Base URL of the connector's Management API, e.g. ``https://edc.example.org/management``."""
    api_version: Literal["v3", "v4"] = "v4"
    """Management API version: ``v4`` (EDC ≥ 0.17) or ``v3`` (deprecated in EDC 0.17, removed after 0.18)."""
    api_key_file: Path | None = None
    """File holding the Management API key sent as ``X-Api-Key`` (mode 0600; never the key in the config)."""
    vault_secret: Annotated[str, Field(min_length=1, max_length=256)] = "ds4h-gateway-endpoint-token"
    """Name of the connector-vault secret holding the value of the endpoint's auth header (e.g. ``Bearer …``)."""
    auth_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] = "Authorization"
    """Header the connector's data plane sends the vault secret in when it pulls from the endpoint."""
    asset_id: Annotated[str, Field(pattern=_EDC_ID)] | None = None
    """Default ``<gateway name>-observations``."""
    policy_id: Annotated[str, Field(pattern=_EDC_ID)] | None = None
    """Default ``<gateway name>-research-purpose``."""
    contract_id: Annotated[str, Field(pattern=_EDC_ID)] | None = None
    """Default ``<gateway name>-research``."""
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Bound on every request to the connector (connect included)."""
    verify_tls: bool = True
    ca_file: Path | None = None
    """CA bundle for the connector's TLS certificate (default: the system's)."""

    @field_validator("management_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v is not None else None


class DataspaceSection(_Section):
    """The dataspace link: the gateway's public endpoint, its credential, its connector (docs/dataspace.md)."""

    public_url: str | None = None
    """Public base URL of this gateway's dataspace endpoints (``/dataspace/v1/…``), as the connector reaches it."""
    site: str | None = None
    """Site name put in the gateway credential request (default: ``gateway.name``)."""
    credential_issuer: str | None = None
    """The operator's DID (``did:web:…``): ``dataspace credential install`` accepts credentials from it only."""
    edc: EdcSection = EdcSection()

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v is not None else None

    @field_validator("credential_issuer")
    @classmethod
    def _issuer(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("did:web:", "did:key:")):
            raise ValueError("must be a DID (did:web:… or did:key:…)")
        return v


class StatusPageSection(_Section):
    """The live status page (docs/status-page.md)."""

    enabled: bool = True
    """Serve ``/status`` (page and live feed) on the control API's loopback port."""
    host: str | None = None
    """Also serve the status page — and nothing else — on this address (e.g. ``0.0.0.0``); off the loopback
    interface it needs ``cert_file`` and ``key_file`` (HTTPS)."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8443
    """Port of that second listener (0: a free one)."""
    cert_file: Path | None = None
    """TLS certificate chain (PEM) of the second listener."""
    key_file: Path | None = None
    """Its private key (PEM, mode 0600)."""
    token_file: Path | None = None
    """The page's login token; default ``<state_dir>/status.token`` (created 0600 on first start)."""
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 12.0
    """How long the browser's login cookie lasts."""
    update_interval_s: Annotated[float, Field(ge=0.1, le=60)] = 0.5
    """How often the live feed sends what is new."""
    ecg_strip_s: Annotated[float, Field(ge=1, le=60)] = 8.0
    """Seconds of waveform (ECG, pleth) the page shows."""

    @model_validator(mode="after")
    def _checks(self) -> StatusPageSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        if self.host is not None and self.host not in _LOOPBACK_HOSTS and self.cert_file is None:
            raise ValueError(
                f"the status page shows patient data: serving it on {self.host} needs TLS (cert_file, key_file)"
            )
        return self


class WebSection(_Section):
    host: Literal["127.0.0.1", "::1", "localhost"] = "127.0.0.1"
    """The control API listens on loopback only."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8765
    """0 picks a free port (the demo does); the URL is written to ``<state_dir>/control.json``."""
    max_body_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    status: StatusPageSection = StatusPageSection()


class Config(_Section):
    gateway: GatewaySection = GatewaySection()
    devices: dict[str, DeviceEntry] = Field(default_factory=dict)
    outbox: OutboxSection = OutboxSection()
    sinks: SinksSection = SinksSection()
    mqtt: MqttSection = MqttSection()
    ble: BleSection = BleSection()
    provenance: ProvenanceSection = ProvenanceSection()
    encryption: EncryptionSection | None = None
    """Required (docs/security.md): where the state encryption key comes from, or ``enabled = false``."""
    dataspace: DataspaceSection = DataspaceSection()
    research: ResearchSection = ResearchSection()
    web: WebSection = WebSection()

    @model_validator(mode="after")
    def _encryption_given(self, info: ValidationInfo) -> Config:
        if self.encryption is None and (info.context or {}).get("require_encryption", True):
            raise ValueError(
                "[encryption] is missing: say where the state encryption key comes from (key_credential, "
                "key_file or key_url), or insecure_key_on_disk = true for a demo, or enabled = false "
                "(docs/security.md)"
            )
        return self

    @property
    def crypto(self) -> EncryptionSection:
        """The ``[encryption]`` section (always present once validated)."""
        assert self.encryption is not None
        return self.encryption


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay ``DS4H_<SECTION>__<KEY>`` variables onto the raw config tree."""
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if any(not p for p in path):
            raise ConfigError(f"environment variable {name}: empty key segment")
        node = raw
        for p in path[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name}: {'.'.join(path)} is not a table")
            node = child
        node[path[-1]] = _env_value(environ[name])
    return raw


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{origin}: {loc}: {msg}" if loc else f"{origin}: {msg}")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], origin: str = "<config>", *, require_encryption: bool = True) -> Config:
    """Validate a config tree. ``require_encryption=False``: a missing ``[encryption]`` is accepted (tools that
    read a state directory, whose own ``encryption.json`` says how it is encrypted); :attr:`Config.crypto`
    then must not be used."""
    devices = raw.get("devices")
    if isinstance(devices, dict):
        for device_id in devices:
            try:
                check_device_id(device_id)
            except ValueError as e:
                raise ConfigError(f"{origin}: devices.{device_id}: {e}") from None
    try:
        return Config.model_validate(raw, context={"require_encryption": require_encryption})
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin)) from None
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{origin}: {e}") from None


def load_config(
    path: Path | None, environ: Mapping[str, str] | None = None, *, require_encryption: bool = True
) -> Config:
    """Load, overlay the environment, and validate. ``path=None`` means embedded defaults only."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    origin = "<defaults>"
    if path is not None:
        origin = str(path)
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{origin}: no such file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{origin}: not valid TOML: {e}") from None
        except OSError as e:
            raise ConfigError(f"{origin}: cannot read: {e.strerror}") from None
    raw = apply_env(raw, env)
    return parse_config(raw, origin, require_encryption=require_encryption)


def influx_token(section: InfluxSinkSection, origin: str = "sinks.influx") -> str:
    """The store's API token, from ``token_file`` (preferred) or ``token``."""
    if section.token_file is not None:
        try:
            return section.token_file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"{origin}.token_file: cannot read {section.token_file}: {e.strerror}") from None
    if section.token:
        return section.token
    raise ConfigError(f"{origin}: set token_file (or token)")

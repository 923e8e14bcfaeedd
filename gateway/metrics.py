"""Prometheus metrics of one running gateway (its own registry, so several can run in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.readings_ingested = Counter(
            "ds4h_readings_ingested", "Points (readings + waveform samples) accepted for commit", registry=r
        )
        self.readings_committed = Counter(
            "ds4h_readings_committed",
            "Points durably committed to the outbox (new, not duplicates)",
            registry=r,
        )
        self.batches_committed = Counter("ds4h_batches_committed", "Batches committed", registry=r)
        self.batches_duplicate = Counter(
            "ds4h_batches_duplicate", "Redelivered batches answered 'already committed'", registry=r
        )
        self.readings_forwarded = Counter("ds4h_readings_forwarded", "Points written to a sink", ["sink"], registry=r)
        self.batches_forwarded = Counter("ds4h_batches_forwarded", "Batches written to a sink", ["sink"], registry=r)
        self.rejected = Counter("ds4h_rejected", "Inputs quarantined, by reason", ["reason"], registry=r)
        self.readings_lost = Counter(
            "ds4h_readings_lost",
            "Points lost after they were accepted (must stay 0; anything counted here is also logged)",
            registry=r,
        )
        self.quarantine_overflow = Counter(
            "ds4h_quarantine_overflow",
            "Quarantine records not stored because the buffer was full",
            registry=r,
        )
        self.dead_lettered = Counter(
            "ds4h_dead_lettered",
            "Batches a sink rejected, moved to the dead-letter table",
            ["sink"],
            registry=r,
        )
        self.sink_errors = Counter("ds4h_sink_errors", "Failed sink writes, by class", ["sink", "kind"], registry=r)
        self.commit_failures = Counter("ds4h_commit_failures", "Outbox transactions that failed", registry=r)
        self.backpressure = Gauge("ds4h_backpressure", "1 while ingest is back-pressured", registry=r)
        self.backpressure_refusals = Counter(
            "ds4h_backpressure_refusals", "Batches refused (not acknowledged) under back-pressure", registry=r
        )
        self.pruned_envelopes = Counter(
            "ds4h_pruned_envelopes",
            "Delivered envelopes pruned from the provenance archive",
            ["why"],
            registry=r,
        )
        self.pruned_history = Counter("ds4h_pruned_history_rows", "Local history rows pruned", ["why"], registry=r)
        self.outbox_depth = Gauge("ds4h_outbox_depth", "Batches not yet delivered, per sink", ["sink"], registry=r)
        self.outbox_oldest_age = Gauge(
            "ds4h_outbox_oldest_age_seconds",
            "Age of the oldest undelivered batch, per sink",
            ["sink"],
            registry=r,
        )
        self.dead_letters = Gauge("ds4h_dead_letters", "Dead letters held, per sink", ["sink"], registry=r)
        self.disk_used = Gauge("ds4h_disk_used_bytes", "Bytes used by outbox, archive and history", registry=r)
        self.disk_budget = Gauge("ds4h_disk_budget_bytes", "Configured disk budget", registry=r)
        self.clock_synced = Gauge("ds4h_clock_synchronised", "1 when the gateway clock is synchronised", registry=r)
        self.commit_latency = Histogram(
            "ds4h_commit_latency_seconds",
            "Batch receive → outbox COMMIT",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.mqtt_connected = Gauge("ds4h_mqtt_connected", "1 while connected to the MQTT broker", registry=r)
        self.mqtt_reconnects = Counter("ds4h_mqtt_reconnects", "MQTT connections lost or refused", registry=r)
        self.mqtt_messages = Counter(
            "ds4h_mqtt_messages",
            "MQTT messages acknowledged, by outcome (committed, duplicate, quarantined, status)",
            ["outcome"],
            registry=r,
        )
        self.mqtt_signatures = Counter(
            "ds4h_mqtt_signatures",
            "Device signatures (COSE_Sign1) verified on MQTT frames, by outcome (valid, invalid)",
            ["outcome"],
            registry=r,
        )
        self.mqtt_acks_published = Counter(
            "ds4h_mqtt_ack_watermarks_published", "Retained device ack messages published", registry=r
        )
        self.mqtt_acks_dropped = Counter(
            "ds4h_mqtt_acks_dropped",
            "Committed messages whose PUBACK could not be sent (connection lost; the broker redelivers them)",
            registry=r,
        )
        self.ble_connected = Gauge("ds4h_ble_connected", "BLE devices connected now", registry=r)
        self.ble_connects = Counter("ds4h_ble_connects", "BLE connections established", registry=r)
        self.ble_connect_failures = Counter(
            "ds4h_ble_connect_failures",
            "BLE connection attempts or sessions that failed, by reason",
            ["reason"],
            registry=r,
        )
        self.ble_disconnects = Counter("ds4h_ble_disconnects", "BLE connections lost or closed", registry=r)
        self.ble_reconnects = Counter(
            "ds4h_ble_reconnects", "BLE connections established to a device that had been connected before", registry=r
        )
        self.ble_notifications = Counter(
            "ds4h_ble_notifications", "BLE notifications and indications received, by driver", ["driver"], registry=r
        )
        self.ble_records = Counter(
            "ds4h_ble_stored_records", "Stored records (RACP) committed from BLE devices", ["driver"], registry=r
        )
        self.ble_pairing = Counter(
            "ds4h_ble_pairing",
            "Pairing attempts by outcome (accepted, refused_window, refused_policy)",
            ["outcome"],
            registry=r,
        )
        self.ble_clock_drift = Gauge(
            "ds4h_ble_clock_skew_seconds", "Gateway − device clock at the last connect", ["device"], registry=r
        )
        self.consent_decisions = Counter(
            "ds4h_consent_decisions",
            "Batches the research sink checked against consent, by decision (eligible, partial, not_eligible)",
            ["decision"],
            registry=r,
        )
        self.ready = Gauge("ds4h_ready", "1 while /readyz answers ready", registry=r)
        self.status_viewers = Gauge("ds4h_status_viewers", "Live feeds of the status page open now", registry=r)
        self.status_logins = Counter(
            "ds4h_status_logins", "Status page logins by outcome (accepted, refused)", ["outcome"], registry=r
        )

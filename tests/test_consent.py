"""Patients, consent and the research path (docs/consent.md), against real servers.

A real gateway writes care data to one VictoriaMetrics and research data to a second one. Patient A (the
``PATIENT`` sentinel as its identifier) has research consent, patient B has none, patient C opted out. The
research store, the FHIR endpoint and the offline export hold only A's pseudonymised observations; no raw patient
identifier or device id reaches them; a revocation stops all three; served Bundles validate with fhir.resources
(R4B), carry the right MDC/LOINC codes and UCUM units and a signature that verifies (and fails once altered);
paging and CSV work; a wrong or missing token gets 401; the state files hold no patient identifier in the clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli import main as cli
from gateway.dataspace.bundlesig import verify_bundle, verify_csv
from gateway.dataspace.consent import ConsentError, load_fhir, load_opt_out
from gateway.dataspace.eligibility import Eligibility, decide, eligible_intervals
from gateway.dataspace.fhir import CGM_READING, observation
from gateway.dataspace.observations import Item, resolve
from gateway.dataspace.patients import ConsentDb, StoredConsent
from gateway.dataspace.pseudonym import Pseudonymiser, open_pseudonymiser
from gateway.model import Batch, Reading, SourceKey
from gateway.sinks.local import HistoryReading
from gateway.sinks.research import decision_of, encode_filtered, filter_batch
from gateway.state import statekey
from gateway.vocabulary import METRICS
from tests import sentinels
from tests.gw import make_config, post, running, wait_until
from tests.services import VictoriaMetrics, free_port

A = sentinels.PATIENT
B = "patient-b-0002"
C = "patient-c-0003"
ECG = np.arange(-200, 200, 4, dtype=np.int32)


@pytest.fixture(autouse=True)
def _fresh_ciphers() -> Iterator[None]:
    yield
    statekey._ciphers.clear()


def consent(cid: str, patient: str, *, status: str = "active", typ: str = "permit", **prov: Any) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "id": cid,
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": "urn:oid:1.2.3", "value": patient}},
        "provision": {
            "type": typ,
            "period": {"start": "2026-01-01T00:00:00Z"},
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}],
            **prov,
        },
    }


# --- unit: FHIR Consent mapping and the rules ---------------------------------------------------------
def test_fhir_consent_import_maps_status_scope_purpose_and_period(tmp_path: Path) -> None:
    other_scope = consent("c9", B)
    other_scope["scope"]["coding"][0]["code"] = "treatment"
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": consent("c1", A)},
            {"resource": consent("c2", B, status="inactive")},
            {"resource": consent("c3", B, typ="deny", provision=[{"type": "permit", "period": {"end": "2026-06"}}])},
            {"resource": other_scope},
        ],
    }
    f = tmp_path / "consents.json"
    f.write_text(json.dumps(bundle))
    r = load_fhir(f)
    assert [(x.patient_id, x.decision, x.status) for x in r.records] == [
        (A, "permit", "active"),
        (B, "permit", "inactive"),
        (B, "deny", "active"),
        (B, "permit", "active"),
    ]
    assert r.records[0].from_ns == 1_767_225_600 * 10**9 and r.records[0].until_ns is None
    assert r.records[3].until_ns == 1_780_272_000 * 10**9  # 2026-06 → 2026-06-01
    assert len(r.skipped) == 1 and "Consent/c9" in r.skipped[0] and "treatment" in r.skipped[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("id"), "id is missing"),
        (lambda c: c.update(status="done"), "Consent/c1: status 'done'"),
        (lambda c: c["provision"].pop("type"), "Consent/c1: provision.type must be"),
        (lambda c: c["provision"]["period"].update(start="yesterday"), "Consent/c1: provision.period.start"),
        (lambda c: c.pop("patient"), "Consent/c1: patient is missing"),
        (lambda c: c.pop("scope"), "Consent/c1: scope is missing"),
        (lambda c: c.update(resourceType="Patient"), "resourceType is 'Patient'"),
    ],
)
def test_bad_fhir_consent_names_the_resource_and_field(tmp_path: Path, change: Any, message: str) -> None:
    c = consent("c1", A)
    change(c)
    f = tmp_path / "c.json"
    f.write_text(json.dumps(c))
    with pytest.raises(ConsentError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_fhir(f)


def test_non_research_purpose_is_skipped_and_opt_out_is_deny(tmp_path: Path) -> None:
    c = consent("c1", A)
    c["provision"]["purpose"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]
    f = tmp_path / "c.json"
    f.write_text(json.dumps(c))
    r = load_fhir(f)
    assert r.records == [] and "TREAT" in r.skipped[0]
    o = tmp_path / "opt-out.txt"
    o.write_text(f"# refused research\n{C}\n\n")
    (rec,) = load_opt_out(o).records
    assert (rec.patient_id, rec.decision, rec.until_ns, rec.source) == (C, "deny", None, "opt-out")


def _stored(decision: str, f: int, u: int | None, status: str = "active", revoked: int | None = None) -> StoredConsent:
    return StoredConsent(1, A, "research", decision, f, u, status, "fhir", "r", 0, revoked)


def test_rules_deny_over_permit_status_and_revocation() -> None:
    permit = _stored("permit", 100, 200)
    assert decide([permit], 150) == "eligible"
    assert decide([permit], 200) == "no_consent"  # the end is exclusive
    assert decide([permit, _stored("deny", 0, None)], 150) == "denied"  # deny over permit
    for status in ("inactive", "rejected", "entered-in-error", "draft", "proposed"):
        assert decide([_stored("permit", 100, 200, status)], 150) == "no_consent"
    assert decide([_stored("permit", 100, 200, revoked=1)], 150) == "no_consent"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["permit", "deny"]),
            st.integers(0, 50),
            st.one_of(st.none(), st.integers(1, 60)),
            st.sampled_from(["active", "inactive"]),
            st.booleans(),
        ),
        max_size=6,
    ),
    st.lists(st.integers(-5, 70), min_size=1, max_size=20),
)
def test_eligible_intervals_agree_with_the_rule(raw: list[Any], times: list[int]) -> None:
    consents = [
        _stored(d, f, None if u is None else f + u, status, 1 if revoked else None) for d, f, u, status, revoked in raw
    ]
    windows = eligible_intervals(consents)
    for t in times:
        inside = any(a <= t < b for a, b in windows)
        assert inside == (decide(consents, t) == "eligible"), (t, windows)


def test_pseudonyms_are_keyed_and_rotate() -> None:
    k1, k2 = b"\x01" * 32, b"\x02" * 32
    p = Pseudonymiser([k1])
    assert p.patient(A) == Pseudonymiser([k1]).patient(A) != Pseudonymiser([k2]).patient(A)
    assert A not in p.patient(A) and p.patient(A).startswith("psn-") and len(p.patient(A)) == 36
    assert p.device(A, "hr-1") != p.device(B, "hr-1")  # one device, two patients: not linkable
    rotated = Pseudonymiser([k2, k1])
    assert rotated.all_patient(A) == [Pseudonymiser([k2]).patient(A), p.patient(A)]


def test_a_pseudonym_of_a_previous_key_still_resolves(tmp_state_dir: Path) -> None:
    old, new = Pseudonymiser([b"\x01" * 32]), Pseudonymiser([b"\x02" * 32, b"\x01" * 32])
    with ConsentDb.open(tmp_state_dir) as db:
        db.bind("hr-1", A, 0)
        db.bind("cgm-1", B, 0)
        assert resolve(db, new, old.patient(A)) == (A, 1)
        assert resolve(db, new, new.patient(B)) == (B, 0)
        assert resolve(db, old, new.patient(B)) is None


def test_bindings_do_not_overlap(tmp_state_dir: Path) -> None:
    with ConsentDb.open(tmp_state_dir) as db:
        db.bind("hr-1", A, 100, 200)
        with pytest.raises(Exception, match="already bound"):
            db.bind("hr-1", B, 150)
        db.bind("hr-1", B, 200)
        assert db.binding_at("hr-1", 199).patient_id == A  # type: ignore[union-attr]
        assert db.binding_at("hr-1", 200).patient_id == B  # type: ignore[union-attr]
        assert db.unbind("hr-1", 300) == 1
        assert db.binding_at("hr-1", 300) is None and db.binding_at("hr-1", 99) is None


MDC = "urn:iso:std:iso:11073:10101"


def test_research_filter_partial_batch_and_its_line_protocol(tmp_state_dir: Path) -> None:
    t = 1_780_000_000 * 10**9
    with ConsentDb.open(tmp_state_dir) as db:
        db.bind("hr-1", A, t - 10**9, t + 2 * 10**9)  # taken off after the second reading
        db.add_consents(load_fhir_text(tmp_state_dir, [consent("a1", A)]).records)
        batch = Batch(
            SourceKey("hr-1", ("b", 1)),
            t,
            readings=tuple(Reading("heart_rate", 70.0 + i, "/min", t + i * 10**9, seq=i) for i in range(5)),
        )
        pseudo = Pseudonymiser([b"\x07" * 32])
        f = filter_batch(batch, Eligibility(db), pseudo)
    assert (f.points_in, f.points_out) == (5, 2)
    assert decision_of(f) == ("partial", "no_binding")
    lines = encode_filtered(f).decode().splitlines()
    assert lines == [
        f"heart_rate,device={pseudo.device(A, 'hr-1')},patient={pseudo.patient(A)},unit=/min value={70.0 + i!r},"
        f"seq={i}i {t + i * 10**9}"
        for i in range(2)
    ]


def test_observation_mapping_codes_units_and_absent_values() -> None:
    t = 1_767_225_600_123_456_789
    cases = [
        (HistoryReading("d", "glucose_isf", t, 104.0, "mg/dL", None, 0, 7, 0), "160212", "99504-3", CGM_READING),
        (HistoryReading("d", "glucose_isf", t, 5.8, "mmol/L", None, 0, 8, 0), "160212", "105272-9", None),
        (HistoryReading("d", "glucose_isf", t, None, "mg/dL", "nres", 4, 9, 0), "160212", "99504-3", None),
        (HistoryReading("d", "spo2", t, 97.0, "%", None, 0, None, 0), "150456", "59408-5", None),
        (HistoryReading("d", "glucose_capillary_whole_blood", t, 5.4, "mmol/L", None, 0, 1, 0), "160184", None, None),
    ]
    for r, mdc, loinc, profile in cases:
        o = observation(Item(t, r.metric, "psn-x", "pdv-y", 1, reading=r))
        Observation.model_validate(o)
        codings = o["code"]["coding"]
        assert codings[0] == {"system": MDC, "code": mdc, "display": METRICS[r.metric].mdc_ref}
        assert [c["code"] for c in codings[1:]] == ([loinc] if loinc else [])
        assert o["effectiveDateTime"] == "2026-01-01T00:00:00.123456Z"
        if profile:
            assert profile in o["meta"]["profile"]
        if r.value is None:
            assert o["dataAbsentReason"]["coding"][0]["code"] == "error" and "valueQuantity" not in o
            assert o["status"] == "preliminary"  # the device set status bits
        else:
            q = o["valueQuantity"]
            assert (q["value"], q["unit"], q["code"], q["system"]) == (
                r.value,
                r.unit,
                r.unit,
                "http://unitsofmeasure.org",
            )


async def test_a_research_store_that_is_down_holds_up_no_care_data(
    tmp_state_dir: Path, victoria_metrics: VictoriaMetrics
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = make_config(
        tmp_state_dir,
        gateway={"shutdown_flush_s": 1},
        sinks={"influx": {"url": victoria_metrics.url, "token": "t"}},
        research={"enabled": True, "insecure_key_on_disk": True, "store": {"url": dead, "token": "t"}},
    )
    async with running(cfg) as gw:
        with ConsentDb.open(tmp_state_dir) as db:
            db.bind("hr-1", A, 0)
            db.add_consents(load_fhir_text(tmp_state_dir, [consent("a1", A)]).records)
        t0 = time.time_ns() - 60 * 10**9
        batches = [{"device": "hr-1", "key": ["down", i], "readings": [
            {"metric": "heart_rate", "v": 70.0, "u": "/min", "t": t0 + i * 10**9}]} for i in range(20)]  # fmt: skip
        status, _ = await post(gw, batches)
        assert status == 200
        await asyncio.to_thread(victoria_metrics.wait_for_points, 'heart_rate_value{device="hr-1"}', 20)
        await wait_until(lambda: gw.stats()["sinks"]["research"]["last_error"] is not None, what="research retrying")
        assert gw.counters()["readings_forwarded"]["local"] == 20
        assert gw.counters()["readings_forwarded"]["research"] == 0
        assert gw.counters()["readings_lost"] == 0


def load_fhir_text(where: Path, resources: list[dict[str, Any]]) -> Any:
    f = where / "consents.json"
    f.write_text(json.dumps(resources))
    return load_fhir(f)


# --- integration ------------------------------------------------------------------------------------
def _cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(list(args))
    assert code == 0, out.getvalue()
    return out.getvalue()


def _batches(seq: int, t0: int) -> list[dict[str, Any]]:
    """hr-1 (patient A), cgm-1 (B, no consent), ecg-1 (A), spo2 of a device of C (opted out)."""
    return [
        {"device": "hr-1", "key": ["r", seq], "readings": [
            {"metric": "heart_rate", "v": 60.0 + seq, "u": "/min", "t": t0 + i * 10**9, "seq": seq * 10 + i}
            for i in range(5)]},
        {"device": "cgm-1", "key": ["r", seq], "readings": [
            {"metric": "glucose_isf", "v": 100.0 + seq, "u": "mg/dL", "t": t0}]},
        {"device": "ecg-1", "key": ["r", seq], "waveforms": [
            {"metric": "ecg", "u": "uV", "t0": t0, "period": 4_000_000, "i32le": ECG.astype("<i4").tobytes()}]},
        {"device": "spo2-1", "key": ["r", seq], "readings": [
            {"metric": "spo2", "v": 97.0, "u": "%", "t": t0}]},
    ]  # fmt: skip


async def _get(url: str, token: str | None, accept: str = "application/fhir+json") -> tuple[int, str, dict[str, str]]:
    headers = {"Accept": accept}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as s, asyncio.timeout(30), s.get(url, headers=headers) as r:
        return r.status, await r.text(), dict(r.headers)


def _research_config(state: Path, care: VictoriaMetrics, research: VictoriaMetrics) -> Any:
    devices = {"hr-1": {"kind": "heart_rate"}, "cgm-1": {"kind": "cgm"}, "ecg-1": {"kind": "ecg"},
               "spo2-1": {"kind": "pulse_oximeter", "serial": "SN-" + "7" * 8}}  # fmt: skip
    cfg = make_config(
        state,
        sinks={"influx": {"url": care.url, "token": "care-token"}},
        research={"enabled": True, "insecure_key_on_disk": True, "store": {"url": research.url, "token": "rs"},
                  "page_size": 3},
    )  # fmt: skip
    return cfg.model_copy(update={"devices": {k: type(cfg.devices["hr-1"])(**v) for k, v in devices.items()}})


def _scan_text(text: str) -> None:
    for needle in (A, B, C, "hr-1", "cgm-1", "ecg-1", "spo2-1", "SN-7777"):
        assert needle not in text, needle


async def test_research_path_end_to_end(
    tmp_state_dir: Path, tmp_path: Path, victoria_metrics: VictoriaMetrics, vm_private: VictoriaMetrics
) -> None:
    state = tmp_state_dir
    cfg = _research_config(state, victoria_metrics, vm_private)
    now = time.time_ns()
    t0 = now - 600 * 10**9
    async with running(cfg) as gw:
        sd = ("--state-dir", str(state))
        _cli("patients", "bind", A, "hr-1", "--from", "1d", *sd)
        _cli("patients", "bind", A, "ecg-1", "--from", "1d", *sd)
        _cli("patients", "bind", B, "cgm-1", "--from", "1d", *sd)
        _cli("patients", "bind", C, "spo2-1", "--from", "1d", *sd)
        f = tmp_path / "consent.json"
        f.write_text(json.dumps([consent("a1", A), consent("c1", C)]))
        assert "2 consent record(s) added" in _cli("consent", "import", str(f), *sd)
        o = tmp_path / "opt-out.txt"
        o.write_text(f"{C}\n")
        _cli("consent", "import", "--opt-out", str(o), *sd)  # C also permitted: deny wins
        listed = json.loads(_cli("consent", "list", "--json", *sd))
        assert {(c["patient"], c["decision"]) for c in listed} == {(A, "permit"), (C, "permit"), (C, "deny")}

        status, body = await post(gw, _batches(1, t0) + _batches(2, t0 + 10 * 10**9))
        assert status == 200, body
        assert all(r["status"] == "committed" for r in body["results"])
        await wait_until(
            lambda: gw.research is not None and sum(gw.research.sink.decided.values()) >= 8, what="research"
        )
        assert gw.research is not None
        for decision, n in gw.research.sink.decided.items():  # the same counts on /metrics
            got = gw.metrics.registry.get_sample_value("ds4h_consent_decisions_total", {"decision": decision})
            assert (got or 0) == n, decision
        assert gw.research.sink.decided["eligible"] > 0 and gw.research.sink.decided["not_eligible"] > 0
        # care: everything, as measured
        await asyncio.to_thread(victoria_metrics.wait_for_points, 'heart_rate_value{device="hr-1"}', 10)
        await asyncio.to_thread(victoria_metrics.wait_for_points, 'glucose_isf_value{device="cgm-1"}', 2)
        # research: only A's data, under its pseudonym
        await asyncio.to_thread(vm_private.wait_for_points, "heart_rate_value", 10)
        await asyncio.to_thread(
            vm_private.wait_for_points, "ecg_value", ECG.size
        )  # 4 ms apart: each sample its own point
        series = vm_private.export()
        names = {s["metric"]["__name__"] for s in series}
        assert {"heart_rate_value", "ecg_value"} <= names
        assert not names & {"glucose_isf_value", "spo2_value"}
        patients = {s["metric"]["patient"] for s in series}
        assert len(patients) == 1 and next(iter(patients)).startswith("psn-")
        psn = next(iter(patients))
        assert all(s["metric"]["device"].startswith("pdv-") for s in series)
        _scan_text(json.dumps(series))
        # the decision per batch is recorded, ineligible ones too
        with ConsentDb.open(state, readonly=True) as db:
            decisions = {(d[2], d[5], d[6]) for d in db.decisions()}
        assert decisions == {
            ("hr-1", "eligible", "eligible"),
            ("ecg-1", "eligible", "eligible"),
            ("cgm-1", "not_eligible", "no_consent"),
            ("spo2-1", "not_eligible", "denied"),
        }
        audit = json.loads(_cli("consent", "audit", "--json", "--device", "cgm-1", *sd))
        assert [(a["decision"], a["reason"], a["points_out"]) for a in audit] == [("not_eligible", "no_consent", 0)] * 2

        # the endpoint: token, paging, validation, codes, signature
        url = f"{gw.url}/dataspace/v1/observations?patient={psn}"
        token = (state / "research.token").read_text().strip()
        assert (await _get(url, None))[0] == 401
        assert (await _get(url, "wrong"))[0] == 401
        assert (await _get(url, gw.token))[0] == 401  # the control token is not the research token
        pages: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url is not None:
            status, text, headers = await _get(next_url, token)
            assert status == 200, text
            assert headers["Content-Type"].startswith("application/fhir+json")
            _scan_text(text)
            doc = json.loads(text)
            Bundle.model_validate(doc)  # R4B
            assert verify_bundle(doc, gw.identity.did).ok
            pages.append(doc)
            next_url = next((lk["url"] for lk in doc["link"] if lk["relation"] == "next"), None)
        obs = [e["resource"] for p in pages for e in p["entry"] if e["resource"]["resourceType"] == "Observation"]
        assert len(pages) == 4 and pages[0]["total"] == 12 and len(obs) == 12  # 10 HR + 2 ECG, 3 a page
        hr = [o for o in obs if o["code"]["coding"][0]["code"] == "147842"]
        assert len(hr) == 10
        assert hr[0]["code"]["coding"][1] == {"system": "http://loinc.org", "code": "8867-4"}
        assert hr[0]["valueQuantity"]["system"] == "http://unitsofmeasure.org"
        assert hr[0]["valueQuantity"]["code"] == "/min"
        assert {o["subject"]["identifier"]["value"] for o in obs} == {psn}
        ecg = [o for o in obs if "valueSampledData" in o]
        assert len(ecg) == 2 and ecg[0]["code"]["coding"][0]["code"] == "131328"
        assert ecg[0]["valueSampledData"]["period"] == 4.0
        assert [int(x) for x in ecg[0]["valueSampledData"]["data"].split()] == ECG.tolist()
        # the signature names the source envelopes, and fails when a value is altered
        prov = pages[0]["entry"][-1]["resource"]
        assert prov["resourceType"] == "Provenance" and prov["entity"]
        altered = json.loads(json.dumps(pages[0]))
        first_hr = next(e for e in altered["entry"] if "valueQuantity" in e["resource"])
        first_hr["resource"]["valueQuantity"]["value"] += 1
        bad = verify_bundle(altered)
        assert not bad.ok and "altered" in bad.problems[0]
        p = tmp_path / "page.json"
        p.write_text(json.dumps(pages[0]))
        assert "OK" in _cli("verify", "--bundle", str(p), "--did", gw.identity.did)
        p.write_text(json.dumps(altered))
        assert cli(["verify", "--bundle", str(p)]) == 1
        # other patients' pseudonyms give nothing; kinds filter; CSV
        pseudo = open_pseudonymiser(state)
        assert pseudo.patient(A) == psn
        for other in (B, C):
            status, text, _ = await _get(f"{gw.url}/dataspace/v1/observations?patient={pseudo.patient(other)}", token)
            assert status == 200 and json.loads(text)["total"] == 0
        status, text, _ = await _get(f"{url}&kind=heart-rate&_count=100", token)
        assert json.loads(text)["total"] == 10
        status, text, headers = await _get(f"{url}&_count=100", token, accept="text/csv")
        assert status == 200 and headers["Content-Type"].startswith("text/csv") and "X-DS4H-Signature" in headers
        csv_sig = verify_csv(text.encode(), headers["X-DS4H-Signature"], gw.identity.did)
        assert csv_sig.ok and csv_sig.envelopes, csv_sig.problems
        assert not verify_csv(text.replace(",", ";", 1).encode(), headers["X-DS4H-Signature"]).ok
        rows = text.strip().splitlines()
        assert rows[0].startswith("patient,device,kind,metric") and len(rows) == 13
        _scan_text(text)
        assert (await _get(f"{url}&kind=nonsense", token))[0] == 400

        # offline export (the same selection)
        out = tmp_path / "export.json"
        _cli("dataspace", "export", *sd, "--out", str(out))
        doc = json.loads(out.read_text())
        Bundle.model_validate(doc)
        assert verify_bundle(doc, gw.identity.did).ok
        assert doc["total"] == 12
        _scan_text(out.read_text())

        # revoke A: endpoint, export and research store stop at once
        _cli("consent", "revoke", "--patient", A, *sd)
        status, text, _ = await _get(url, token)
        assert status == 200 and json.loads(text)["total"] == 0
        _cli("consent", "import", str(f), *sd)  # a re-import of the same file does not undo the revocation
        status, text, _ = await _get(url, token)
        assert status == 200 and json.loads(text)["total"] == 0
        _cli("dataspace", "export", *sd, "--out", str(out))
        assert json.loads(out.read_text())["total"] == 0
        before = vm_private.count_unique_points("heart_rate_value")
        status, body = await post(gw, _batches(3, t0 + 20 * 10**9))
        assert status == 200
        await wait_until(lambda: sum(gw.research.sink.decided.values()) >= 12, what="research after revoke")  # type: ignore[union-attr]
        await asyncio.to_thread(
            victoria_metrics.wait_for_points, 'heart_rate_value{device="hr-1"}', 15
        )  # care data keeps flowing
        assert vm_private.count_unique_points("heart_rate_value") == before
    assert (state / "pseudonym.key").read_bytes().startswith(b"ds4h sealed pseudonym key")  # under the state key
    # nothing in the state directory carries a patient identifier in the clear
    for f in sorted(state.rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            for pid in (A, B, C):
                assert pid.encode() not in data, (f.name, pid)

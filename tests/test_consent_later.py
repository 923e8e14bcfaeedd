"""A consent or a binding entered after the readings, reaching back (docs/consent.md#later-consent).

Against a real gateway, a care VictoriaMetrics and a research VictoriaMetrics: the research sink first judges
patient B's CGM readings ``not_eligible`` (no consent yet) and the heart-rate strap's ``not_eligible`` (not
bound yet). A Consent imported later whose period covers those readings, and a binding entered later with a
start in the past, queue exactly those batches again: the research store then holds them under the patient's
pseudonym, the recorded decisions say ``eligible``, the endpoint serves them, and doing it again finds nothing
more to forward. A batch of a patient who stays without consent is not queued.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from gateway.dataspace.patients import ConsentDb
from gateway.dataspace.pseudonym import open_pseudonymiser
from gateway.outbox.store import open_outbox
from tests.gw import post, running, wait_until
from tests.services import VictoriaMetrics
from tests.test_consent import A, B, _batches, _cli, _get, _research_config, consent


def _decisions(state: Path) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    with ConsentDb.open(state, readonly=True) as db:
        for d in db.decisions():
            out.setdefault(d[2], set()).add((d[5], d[6]))
    return out


async def test_a_later_consent_and_a_later_binding_reach_back(
    tmp_state_dir: Path, tmp_path: Path, victoria_metrics: VictoriaMetrics, vm_private: VictoriaMetrics
) -> None:
    state = tmp_state_dir
    sd = ("--state-dir", str(state))
    cfg = _research_config(state, victoria_metrics, vm_private)
    t0 = time.time_ns() - 600 * 10**9
    async with running(cfg) as gw:
        assert gw.research is not None
        sink = gw.research.sink
        _cli("patients", "bind", B, "cgm-1", "--from", "1d", *sd)  # B: bound, no consent yet
        fa = tmp_path / "a.json"
        fa.write_text(json.dumps([consent("a1", A)]))  # A consents, but hr-1 is not bound to A yet
        assert "queued again" not in _cli("consent", "import", str(fa), *sd)
        status, body = await post(gw, _batches(1, t0) + _batches(2, t0 + 10 * 10**9))
        assert status == 200, body
        await wait_until(lambda: sum(sink.decided.values()) >= 8, what="the research sink's first decisions")
        first = _decisions(state)
        assert first["cgm-1"] == {("not_eligible", "no_consent")}
        assert first["hr-1"] == {("not_eligible", "no_binding")}
        pseudo = open_pseudonymiser(state)
        psn_a, psn_b = pseudo.patient(A), pseudo.patient(B)
        assert vm_private.count_unique_points(f'{{patient=~"{psn_a}|{psn_b}"}}') == 0

        # B's consent arrives ten minutes late, its period reaching back to January
        fb = tmp_path / "b.json"
        fb.write_text(json.dumps([consent("b1", B)]))
        out = _cli("consent", "import", str(fb), *sd)
        assert "research: 2 earlier batch(es) queued again for the research sink" in out, out
        await asyncio.to_thread(vm_private.wait_for_points, f'glucose_isf_value{{patient="{psn_b}"}}', 2)
        await wait_until(lambda: _decisions(state)["cgm-1"] == {("eligible", "eligible")}, what="decided again")
        token = (state / "research.token").read_text().strip()
        status, text, _ = await _get(f"{gw.url}/dataspace/v1/observations?patient={psn_b}&kind=cgm-glucose", token)
        assert status == 200 and json.loads(text)["total"] == 2
        # the same import again: those batches are eligible now, nothing is queued
        assert "queued again" not in _cli("consent", "import", str(fb), *sd)

        # hr-1 was A's all along: a binding entered now, from an hour ago
        out = _cli("patients", "bind", A, "hr-1", "--from", "1h", *sd)
        assert "research: 2 earlier batch(es) queued again for the research sink" in out, out
        await asyncio.to_thread(vm_private.wait_for_points, f'heart_rate_value{{patient="{psn_a}"}}', 10)
        await wait_until(lambda: _decisions(state)["hr-1"] == {("eligible", "eligible")}, what="hr-1 decided again")

        # nothing left; the opted-out and unbound devices were never queued
        assert "research: no earlier batch to forward again" in _cli("consent", "reforward", *sd)
        final = _decisions(state)
        assert final["ecg-1"] == {("not_eligible", "no_binding")}
        assert final["spo2-1"] == {("not_eligible", "no_binding")}
        conn = open_outbox(state, readonly=True)
        try:
            assert conn.execute("SELECT COUNT(*) FROM sink_again").fetchone()[0] == 0
        finally:
            conn.close()
        assert gw.counters()["readings_lost"] == 0


async def test_a_consent_imported_while_the_sink_decides_is_not_missed(
    tmp_state_dir: Path, tmp_path: Path, victoria_metrics: VictoriaMetrics, vm_private: VictoriaMetrics
) -> None:
    """The import lands after the sink read the consent state and before it recorded its decisions: the
    import cannot see those decisions yet, so the sink itself decides that round again."""
    state = tmp_state_dir
    sd = ("--state-dir", str(state))
    cfg = _research_config(state, victoria_metrics, vm_private)
    fb = tmp_path / "b.json"
    fb.write_text(json.dumps([consent("b1", B)]))
    async with running(cfg) as gw:
        assert gw.research is not None
        sink = gw.research.sink
        _cli("patients", "bind", B, "cgm-1", "--from", "1d", *sd)
        real = sink._record
        printed: list[str] = []

        def consent_arrives_mid_round(rows: Any, version: int) -> None:
            if not printed and any(r[2] == "cgm-1" for r in rows):
                printed.append(_cli("consent", "import", str(fb), *sd))
            real(rows, version)

        sink._record = consent_arrives_mid_round  # type: ignore[method-assign]
        t0 = time.time_ns() - 300 * 10**9
        status, _ = await post(gw, [b for b in _batches(1, t0) if b["device"] == "cgm-1"])
        assert status == 200
        await wait_until(lambda: bool(printed), what="the import during the round")
        assert "queued again" not in printed[0]  # the round's decisions were not recorded yet
        psn_b = open_pseudonymiser(state).patient(B)
        await asyncio.to_thread(vm_private.wait_for_points, f'glucose_isf_value{{patient="{psn_b}"}}', 1)
        await wait_until(lambda: _decisions(state)["cgm-1"] == {("eligible", "eligible")}, what="decided again")

"""`ds4h-gateway demo` binds its simulated patients and gives some of them research consent: the export of its
state directory is a valid, signed FHIR Bundle holding only the consented patients' pseudonymised observations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fhir.resources.R4B.bundle import Bundle

from gateway.dataspace.bundlesig import verify_bundle
from gateway.dataspace.pseudonym import open_pseudonymiser
from gateway.state import statekey


def test_demo_export_holds_only_consented_patients(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    demo = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--duration", "20", "--json", "--state-dir", str(state),
         "--embedded-broker"],
        capture_output=True, timeout=180, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr.decode()[-2000:]
    summary = json.loads(demo.stdout.decode().strip().splitlines()[-1])
    research = summary["research"]
    assert research["consented"] and research["not_consented"]
    assert research["batches"]["eligible"] > 0 and research["batches"]["not_eligible"] > 0
    export = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "dataspace", "export", "--state-dir", str(state)],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr.decode()[-2000:]
    text = export.stdout.decode()
    doc = json.loads(text)
    Bundle.model_validate(doc)
    assert verify_bundle(doc, summary["did"]).ok
    try:
        pseudo = open_pseudonymiser(state)
    finally:
        statekey._ciphers.clear()
    subjects = {
        e["resource"]["subject"]["identifier"]["value"]
        for e in doc["entry"]
        if e["resource"]["resourceType"] == "Observation"
    }
    assert subjects == {pseudo.patient(p) for p in research["consented"]}
    for p in research["consented"] + research["not_consented"]:
        assert p not in text
    assert not {pseudo.patient(p) for p in research["not_consented"]} & subjects
    assert doc["total"] > 0

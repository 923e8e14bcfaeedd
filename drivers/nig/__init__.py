"""Research non-invasive glucose sensor (a microwave resonator in a clinical trial), docs/research-sensor.md.

- :mod:`drivers.nig.codec` — the binary S21 frame carried in the SenML record ``nig:s21`` (``vd``):
  bytes ⇄ :class:`~drivers.nig.codec.S21Frame`;
- the SenML names ``nig:s21`` and ``nig:estimate`` are handled by :mod:`drivers.senml.profile`.

Its output is research-only: raw spectra (``nig_s21_magnitude``, ``nig_s21_phase``) and a derived
``glucose_research_estimate`` that is never a clinical glucose value.
"""

from __future__ import annotations

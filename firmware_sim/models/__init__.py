"""Physiology models of simulated patients (numpy, vectorised across a ward, deterministic from a seed).

Modules:

- :mod:`firmware_sim.models.beats` — the beat train (R-peak times, RR intervals, beat kinds): heart-rate
  variability (LF and respiratory HF), ectopic beats, atrial-fibrillation episodes; the single source of
  heart rate and RR intervals for a patient;
- :mod:`firmware_sim.models.ecg` — ECG synthesis in the style of ECGSYN driven by the beat train, with
  AF f-waves, baseline wander, mains noise, motion artefacts and lead-off (µV, any sampling rate);
- :mod:`firmware_sim.models.glucose` — glucose–insulin compartment model (minimal model + meal route,
  sc insulin, type 2 secretion, exercise, dawn phenomenon) for type 1 / type 2 patients, with schedules
  and a daily-routine generator;
- :mod:`firmware_sim.models.cgm_sensor` — CGM sensors (interstitial lag, noise, drift, warm-up) and
  glucose meter spot checks observing the same plasma trajectory;
- :mod:`firmware_sim.models.vitals` — blood pressure (circadian dipping, morning surge, white coat) and
  SpO2 (apnoea-like desaturations).
"""

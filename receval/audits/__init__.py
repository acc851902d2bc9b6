"""Responsible-AI audits (first pieces): exposure fairness, popularity bias,
safety exposure, drift and parity.

* :func:`receval.audits.exposure.exposure_audit` — group exposure shares vs a
  target, disparate exposure, AWRF, expected exposure, Gini of exposure;
* :func:`receval.audits.popularity.popularity_bias_audit` — ARP, APLT, ACLT,
  PopRSP, PopREO overall and per user group;
* :func:`receval.audits.safety.safety_audit` — slots, exposure and requests
  going to flagged items, negative-feedback rates;
* :func:`receval.audits.drift.drift_audit`, :func:`~receval.audits.drift.psi`,
  :func:`~receval.audits.drift.ks_distance` and
  :func:`~receval.audits.drift.parity_audit` — distribution shift and
  offline/online parity.

See docs/audits.md.
"""

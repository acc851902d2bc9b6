"""Responsible-AI audits (first pieces): exposure fairness, popularity bias,
safety exposure, user-side performance disparity, calibration by group, drift
and parity.

* :func:`receval.audits.exposure.exposure_audit` — group exposure shares vs a
  target, disparate exposure, AWRF, expected exposure, Gini of exposure;
* :func:`receval.audits.popularity.popularity_bias_audit` — ARP, APLT, ACLT,
  PopRSP, PopREO overall and per user group;
* :func:`receval.audits.safety.safety_audit` — slots, exposure and requests
  going to flagged items, negative-feedback rates;
* :func:`receval.audits.disparity.disparity_audit` — user-side performance
  disparity: any per-request metric averaged per user, broken down by
  sensitive attributes and their intersections (fairlearn ``MetricFrame``),
  differences and ratios to a reference with bootstrap intervals over users,
  worst group, Aequitas tolerance rule; and
  :func:`~receval.audits.disparity.calibration_audit` — ECE, Brier, ... per
  user group;
* :func:`receval.audits.drift.drift_audit`, :func:`~receval.audits.drift.psi`,
  :func:`~receval.audits.drift.ks_distance` and
  :func:`~receval.audits.drift.parity_audit` — distribution shift and
  offline/online parity.

See docs/audits.md.
"""

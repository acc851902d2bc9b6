"""Responsible-AI audits: user-side performance disparity, calibration by
group, exposure fairness, popularity bias and lift, miscalibration, safety
exposure, drift and parity, data quality.

* :func:`receval.audits.exposure.exposure_audit` — group exposure shares vs a
  target, disparate exposure, AWRF, expected exposure, Gini of exposure;
* :func:`receval.audits.popularity.popularity_bias_audit` — ARP, APLT, ACLT,
  PopRSP, PopREO overall and per user group; with ``history=``, the
  popularity lift (GAP_p, GAP_r, Delta GAP; Abdollahpouri et al. 2019) per
  niche / diverse / blockbuster and declared user group, and optionally
  history-excluded rates;
* :func:`receval.audits.miscalibration.miscalibration_audit` — miscalibration
  C_KL of the top-k category mix to the users' histories (Steck 2018), per
  user group;
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
  offline/online parity;
* :func:`receval.audits.quality.data_quality` — data-quality summary of a
  run, labels or impressions frame: the data contract's violations plus
  column profiles, propensities, duplicates, label distribution, score
  ranges and request sizes, each with a status ok / warning / error.

Several audits of one run: ``receval.audits.prepare(run, k=...)`` checks and
ranks it once; pass the :class:`PreparedRun` as ``run`` (same results, less
time).

See docs/audits.md.
"""

from receval.audits._prepared import PreparedRun, prepare

__all__ = ["PreparedRun", "prepare"]

"""Responsible-AI audits: exposure fairness, drift and parity (more to come).

Import the functions from their modules: ``receval.audits.exposure`` and
``receval.audits.drift``.
"""

"""Monitoring: Prometheus metrics, the prediction store with PII masking, live quality from feedback, drift
against the training data's profile, alerts and the monitoring report."""

from modelcycle.monitor.drift import DriftReport, FeatureDrift
from modelcycle.monitor.reference import dataset_drift, drift

__all__ = ["DriftReport", "FeatureDrift", "dataset_drift", "drift"]

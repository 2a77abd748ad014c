"""Monitoring: Prometheus metrics, the prediction store with PII masking, live quality from feedback, drift
against the training data's profile, alerts and the monitoring report. Nothing is imported here: the store's
writer process imports its few modules alone and starts without torch."""

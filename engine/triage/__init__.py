"""From symptoms to procedures: `diagnose`, Prometheus rules from the same thresholds, Alertmanager triage."""

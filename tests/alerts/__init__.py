"""Tests of the Prometheus rules in alerts/ and of their runbook."""

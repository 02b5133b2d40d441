"""Tests of the Grafana dashboards in dashboards/."""

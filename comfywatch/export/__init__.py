"""From target state to Prometheus text: the metric table, the exposition encoder, one target's lines, the
collector that assembles a scrape.
"""

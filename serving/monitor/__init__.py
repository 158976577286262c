"""Watching a model after go-live: the monitoring report from the audit store
(:mod:`serving.monitor.report`). Nothing in this package runs on the request path."""

"""Observability: structured logs with request and run ids (PII masked), and Prometheus
metrics of runs, tools, streams, queues and rate limits."""

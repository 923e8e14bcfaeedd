"""Sinks: where committed batches are forwarded (time-series store, local history, …)."""

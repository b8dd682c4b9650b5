"""Observability: structured logging with secret redaction, metrics and health."""

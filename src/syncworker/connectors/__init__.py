"""Connectors, one package per technology; each declares its ``CONNECTORS`` map (see
``syncworker.core.registry``)."""

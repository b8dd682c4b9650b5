"""Algolia connectors: the index sink (``algoliasearch`` is imported only when it is used)."""

CONNECTORS = {
    "sink:algolia": "syncworker.connectors.algolia.sink:AlgoliaSink",
}

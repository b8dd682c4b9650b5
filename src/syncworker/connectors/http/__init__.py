"""HTTP connectors: the webhook sink, and the REST source (``http``) with its Zoho Creator
preset (``zoho_creator``)."""

CONNECTORS = {
    "sink:webhook": "syncworker.connectors.http.sink_webhook:WebhookSink",
    "source:http": "syncworker.connectors.http.source_rest:HttpSource",
    "source:zoho_creator": "syncworker.connectors.http.zoho:ZohoCreatorSource",
}
"""Connectors, one package per technology; each declares its ``CONNECTORS`` map (see
``syncworker.core.registry``)."""

"""HTTP connectors: the webhook sink (the REST source lives here too when it lands)."""

CONNECTORS = {
    "sink:webhook": "syncworker.connectors.http.sink_webhook:WebhookSink",
}

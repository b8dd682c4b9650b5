"""File connectors: JSON Lines files on a local or mounted file system."""

CONNECTORS = {
    "sink:jsonl": "syncworker.connectors.files.sink_jsonl:JsonlSink",
}

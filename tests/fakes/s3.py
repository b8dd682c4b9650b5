"""An S3-compatible server for tests: moto's server mode (``ThreadedMotoServer``, the S3
REST API as AWS documents it) on 127.0.0.1 and a free port, in a thread of the test process.
The real clients (aioboto3, boto3) talk to it through ``endpoint_url``.

moto keeps its buckets in process memory shared by every server, so each test makes its
own bucket (``S3Server.new_bucket``) instead of resetting the server under another test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

ACCESS_KEY_ID = "testing-key-id"
SECRET_ACCESS_KEY = "testing-secret-key"
REGION = "us-east-1"


class S3Server:
    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""

    def start(self) -> None:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> Any:
        """A plain boto3 client for a test's own checks."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def seed_empty_objects(self, bucket: str, keys: list[str]) -> None:
        """Puts empty objects straight into moto's in-process store: a test that needs
        thousands of objects (pagination, delete batches) would spend a minute on PUTs."""
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
        for key in keys:
            backend.put_object(bucket, key, b"")

    def storage_settings(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """The ``storage:`` mapping of a kit pointing at ``bucket`` on this server."""
        return {
            "type": "s3",
            "bucket": bucket,
            "region": REGION,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
            "endpoint_url": self.endpoint_url,
            **extra,
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the whole run (start-up costs about a second)."""
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()

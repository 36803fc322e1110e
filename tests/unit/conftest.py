"""Fixtures of the unit tests that talk to AWS APIs: moto in this process, never a real account."""
from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from moto_emr import REGION


@pytest.fixture
def emr(monkeypatch):
    """An EMR client on moto in REGION, with fake credentials in the environment (the operators
    under test make their own clients from it)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("emr", region_name=REGION)

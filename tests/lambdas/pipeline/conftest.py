"""A moto DynamoDB client with an empty jobs table (the stack's key schema), for the table adapters' tests."""

import boto3
import pytest
from moto import mock_aws

JOBS_TABLE = "jobs"


@pytest.fixture
def jobs_dynamodb():
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName=JOBS_TABLE,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield dynamodb

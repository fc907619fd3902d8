"""Suite-wide settings: one CPU thread (the machines are shared 2-core boxes) and a quiet jsii."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
# No test may reach real AWS: fake credentials and a fixed region for every boto3 client.
for key, value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[key] = value

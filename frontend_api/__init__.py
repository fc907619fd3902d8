"""The HTTP API: jobs over HTTP on the same job schema and pipeline as the S3 drop."""

"""The pipeline's AWS side: what the handlers do with S3, DynamoDB, Step Functions and SageMaker.

Decisions live in the pure ``lambdas.jobs`` domain; these modules fetch its inputs and store its results.
"""

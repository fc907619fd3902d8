"""The CDK app's constructs and the stack that composes them."""

"""Lambda handlers and the job domain they share (imported as ``lambdas.*`` in AWS and locally)."""

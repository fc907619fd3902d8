"""Lambda entry points: a typed event in, one call into ``lambdas.pipeline``, structured logs out."""

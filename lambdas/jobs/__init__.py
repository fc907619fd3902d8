"""Pure job domain: the job spec, the S3 key layout and the naming rules. No AWS calls here."""

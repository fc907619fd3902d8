"""What the API functions are told by their environment (infra/api.py sets these names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lambdas.pipeline.config import PipelineSettings, environ

AUTH_MODE = "API_AUTH_MODE"  # iam | cognito | none (local mode only)
TOPIC_ARN = "TOPIC_ARN"
WEBHOOK_SECRET_ID = "WEBHOOK_SECRET_ID"
IMPORT_BUCKETS = "API_IMPORT_BUCKETS"  # comma-separated buckets images_url may name as s3://
ALLOW_LOCAL_URLS = "API_ALLOW_LOCAL_URLS"  # "1" only in the local mode and its tests
UPLOAD_EXPIRY_SECONDS = "API_UPLOAD_EXPIRY_SECONDS"
AUTH_MODES = ("iam", "cognito", "none")


@dataclass(frozen=True)
class ApiSettings:
    pipeline: PipelineSettings
    auth_mode: str = "iam"
    topic_arn: str | None = None
    webhook_secret_id: str | None = None
    import_buckets: frozenset[str] = frozenset()
    allow_local_urls: bool = False
    upload_expiry_seconds: int = 900

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = environ() if env is None else env
        mode = env.get(AUTH_MODE, "iam")
        if mode not in AUTH_MODES:
            raise RuntimeError(f"{AUTH_MODE}={mode!r}: expected one of {', '.join(AUTH_MODES)}")
        return cls(
            pipeline=PipelineSettings.from_environment(env),
            auth_mode=mode,
            topic_arn=env.get(TOPIC_ARN) or None,
            webhook_secret_id=env.get(WEBHOOK_SECRET_ID) or None,
            import_buckets=frozenset(b for b in env.get(IMPORT_BUCKETS, "").split(",") if b),
            allow_local_urls=env.get(ALLOW_LOCAL_URLS) == "1",
            upload_expiry_seconds=int(env.get(UPLOAD_EXPIRY_SECONDS, "900")),
        )

"""``python -m local_pipeline serve``: the HTTP API on localhost, over the emulated stack.

The same API function as in AWS answers every request (API Gateway's part is played by
:mod:`local_pipeline.serve_gateway`); training runs the real trainer. There is no auth locally: the
server listens on 127.0.0.1 only, and says so.
"""

from __future__ import annotations

import argparse
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from frontend_api import settings as api_settings
from local_aws.emulator import CREDENTIALS
from local_pipeline.progress import stage
from local_pipeline.serve_gateway import (
    LocalGateway,
    ensure_webhook_secret,
    prepare_local_functions,
)
from local_pipeline.service import REGION, EmbeddedService, ServiceEndpoint

# A presigned-upload batch starts on POST /jobs/{id}/start; the quiet period is only the fallback.
SERVE_QUIET_PERIOD_SECONDS = 600


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, gateway: LocalGateway) -> None:
        self.gateway = gateway
        super().__init__(("127.0.0.1", port), _RequestHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RequestHandler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = self.headers.get("Content-Length", "0")
        body = self.rfile.read(int(length)) if length.isdigit() else b""
        status, headers, data = self.server.gateway.handle(self.command, self.path, dict(self.headers), body)
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in {"content-length", "connection"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def __getattr__(self, name: str) -> Any:
        """Every method (GET ... TRACE, QUERY) reaches the gateway, which answers 405 for the unknown ones."""
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the progress lines


def client_environment(endpoint: ServiceEndpoint) -> dict[str, str]:
    return {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint.endpoint_url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


def start_api(endpoint: ServiceEndpoint, port: int = 0) -> tuple[ApiServer, str]:
    """The API server over a running emulated stack (this process's); returns it and the webhook secret."""
    environment = prepare_local_functions(endpoint.client("lambda"), client_environment(endpoint))
    secret = ensure_webhook_secret(
        endpoint.client("secretsmanager"), environment[api_settings.WEBHOOK_SECRET_ID]
    )
    server = ApiServer(port, LocalGateway(endpoint.client("lambda"), environment["API_FUNCTION_NAME"]))
    return server, secret


def example_session(url: str) -> str:
    return f"""\
  # 1. create a job: one presigned upload target per image comes back
  curl -s -X POST {url}/jobs -H 'Content-Type: application/json' -H 'Idempotency-Key: my-dog-1' \\
    -d '{{"job_name": "my-dog", "class_word": "dog",
         "images": [{{"filename": "1.jpg", "content_type": "image/jpeg"}}]}}'
  # 2. upload each image to its target: every "fields" entry as -F, then the file
  curl -s "<uploads[0].url>" -F key=... -F Content-Type=image/jpeg -F ... -F file=@1.jpg
  # 3. start, follow, fetch
  curl -s -X POST {url}/jobs/<id>/start
  curl -s {url}/jobs/<id>          # status, stage, progress, model files with download links
  curl -s '{url}/jobs?status=training&limit=10'
  curl -s -X DELETE '{url}/jobs/<id>?purge=true'
  # or from a zip: curl -s -X POST {url}/jobs -d '{{"images_url": "http://127.0.0.1:8000/photos.zip"}}'"""


def serve_context(base_model: str | None) -> dict[str, Any]:
    """As `up`: --base-model is the default for jobs that name none, else the tiny demo model."""
    from local_pipeline.cli import TINY_MODEL_HYPERPARAMETERS, TINY_MODEL_JOB
    from local_pipeline.demo_assets import tiny_base_model

    context: dict[str, Any] = {"default_quiet_period_seconds": SERVE_QUIET_PERIOD_SECONDS}
    if base_model:
        context["default_base_model"] = base_model
    else:
        context |= {f"default_{key}": value for key, value in TINY_MODEL_JOB.items()}
        context["default_base_model"] = str(tiny_base_model().resolve())
        context["default_hyperparameters"] = TINY_MODEL_HYPERPARAMETERS
    return context


def cmd_serve(args: argparse.Namespace, results: TextIO) -> int:
    context = serve_context(args.base_model)
    signal.signal(signal.SIGTERM, _stop)
    with EmbeddedService(port=args.aws_port, verbose=args.verbose, context=context) as service:
        assert service.endpoint is not None
        server, secret = start_api(service.endpoint, args.port)
        print(f"HTTP API:       {server.url}  (OpenAPI: frontend_api/openapi.yaml)", file=results, flush=True)
        print(
            "auth:           OFF locally (listening on 127.0.0.1 only); AWS requires SigV4 or a Cognito JWT",
            file=results,
            flush=True,
        )
        print(
            f"webhook secret: {secret}  (HMAC-SHA256 over '<X-DreamBooth-Timestamp>.<body>')",
            file=results,
            flush=True,
        )
        print(f"S3 endpoint:    {service.endpoint.endpoint_url}", file=results, flush=True)
        print("try:\n" + example_session(server.url), file=results, flush=True)
        print("ready: serving (Ctrl-C to stop)", file=results, flush=True)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            stage("stopping the HTTP API and the local service")
        finally:
            server.server_close()
    return 0


def add_serve_command(commands: Any) -> None:
    serve = commands.add_parser("serve", help="serve the HTTP API on localhost over the local service")
    serve.add_argument("--port", type=int, default=8080, help="HTTP API port on 127.0.0.1 (default 8080)")
    serve.add_argument("--aws-port", type=int, help="port of the emulated AWS endpoint (default: a free one)")
    serve.add_argument(
        "--base-model", help="base model for jobs that name none (default: the tiny demo model)"
    )
    serve.add_argument("--verbose", action="store_true", help="show every trainer log line")
    serve.set_defaults(command=cmd_serve)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

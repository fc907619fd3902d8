"""images_url downloads: redirects are checked again, sizes are capped whatever the server claims."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from frontend_api import imports
from frontend_api.archive import ArchiveLimits
from frontend_api.errors import ApiError

from .support import jpeg, photos_zip


class Files(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.routes = routes
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: Files

    def do_GET(self) -> None:
        status, headers, body = self.server.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


LOCAL = imports.ImportSettings(allow_local=True, max_download_bytes=64 * 1024)
LIMITS = ArchiveLimits(max_images=5, max_entry_bytes=32 * 1024)


@pytest.fixture
def files():
    server = Files({})
    yield server
    server.shutdown()


def fetch_code(call) -> str:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value.code


def test_a_zip_is_fetched_checked_and_read(files):
    files.routes["/p.zip"] = (200, {}, photos_zip(2))
    fetched = imports.fetch_zip(files.url("/p.zip"), limits=LIMITS, settings=LOCAL, s3=None)
    assert [name for name, _ in fetched.files] == [
        "photos/0.jpg",
        "photos/1.jpg",
    ] and fetched.image_count == 2


def test_redirects_are_followed_only_to_safe_addresses(files):
    files.routes["/p.zip"] = (200, {}, photos_zip(1))
    files.routes["/moved"] = (302, {"Location": "/p.zip"}, b"")
    files.routes["/to-metadata"] = (302, {"Location": "http://169.254.169.254/latest/meta-data"}, b"")
    files.routes["/to-private"] = (307, {"Location": "http://10.1.2.3/p.zip"}, b"")
    assert imports.fetch_zip(files.url("/moved"), limits=LIMITS, settings=LOCAL, s3=None).image_count == 1
    for path in ("/to-metadata", "/to-private"):
        code = fetch_code(
            lambda p=path: imports.fetch_zip(files.url(p), limits=LIMITS, settings=LOCAL, s3=None)
        )
        assert code == "unsafe_url"


def test_downloads_stop_at_the_limit_whatever_content_length_says(files):
    big = b"x" * (LOCAL.max_download_bytes + 1)
    files.routes["/declared.zip"] = (200, {}, big)
    files.routes["/lying.zip"] = (200, {"Content-Length": "10"}, big)
    assert fetch_code(
        lambda: imports.fetch_zip(files.url("/declared.zip"), limits=LIMITS, settings=LOCAL, s3=None)
    ) == ("images_url_too_large")
    lying = fetch_code(
        lambda: imports.fetch_zip(files.url("/lying.zip"), limits=LIMITS, settings=LOCAL, s3=None)
    )
    assert lying in {"images_url_too_large", "unsafe_archive", "images_url_unreachable"}


def test_a_list_of_image_urls_is_fetched_and_named_in_order(files):
    files.routes["/a/cat.jpg"] = (200, {}, jpeg(1))
    files.routes["/b/cat.jpg"] = (200, {}, jpeg(2))
    fetched = imports.fetch_list(
        [files.url("/a/cat.jpg"), files.url("/b/cat.jpg")], limits=LIMITS, settings=LOCAL, s3=None
    )
    assert [name for name, _ in fetched.files] == ["001-cat.jpg", "002-cat.jpg"]
    assert (
        fetch_code(
            lambda: imports.fetch_list([files.url("/doc.pdf")], limits=LIMITS, settings=LOCAL, s3=None)
        )
        == "invalid_image_name"
    )
    too_many = [files.url(f"/{i}.jpg") for i in range(6)]
    assert (
        fetch_code(lambda: imports.fetch_list(too_many, limits=LIMITS, settings=LOCAL, s3=None))
        == "too_many_images"
    )


def test_plain_http_is_refused_without_the_local_override(files):
    files.routes["/p.zip"] = (200, {}, photos_zip(1))
    code = fetch_code(
        lambda: imports.fetch_zip(
            files.url("/p.zip"), limits=LIMITS, settings=imports.ImportSettings(), s3=None
        )
    )
    assert code == "unsafe_url"

"""HTTP to checked URLs only, connected to the very address that was checked (no DNS rebinding).

urllib3 ships with botocore, so the Lambda runtime has it without extra packages. TLS still verifies
the certificate for the URL's host name (``server_hostname``/``assert_hostname``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import urllib3

from frontend_api.url_safety import CheckedUrl


def request(
    checked: CheckedUrl,
    method: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 20.0,
) -> urllib3.BaseHTTPResponse:
    """One request, no redirects followed, no retries; the response streams (``preload_content=False``)."""
    parts = urlsplit(checked.url)
    address = checked.addresses[0]
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host_header = checked.host if parts.port is None else f"{checked.host}:{parts.port}"
    timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
    if parts.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address,
            checked.port,
            server_hostname=checked.host,
            assert_hostname=checked.host,
            cert_reqs="CERT_REQUIRED",
            timeout=timeout,
            retries=False,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, checked.port, timeout=timeout, retries=False)
    return pool.urlopen(
        method,
        path,
        body=body,
        headers={"Host": host_header, "User-Agent": "dreambooth-service/1", **(headers or {})},
        redirect=False,
        preload_content=False,
        assert_same_host=False,
    )

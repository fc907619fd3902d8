import pytest

from frontend_api.url_safety import UnsafeUrl, check_url, is_public_address


def resolver(addresses):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "224.0.0.1",
        "fd00::1",
    ],
)
def test_private_loopback_link_local_and_reserved_addresses_are_not_public(address):
    assert not is_public_address(address)


def test_public_addresses_are_public():
    assert is_public_address("93.184.216.34")
    assert is_public_address("2606:2800:220:1:248:1893:25c8:1946")


def test_https_to_a_public_host_passes_and_keeps_the_checked_addresses():
    checked = check_url("https://example.com/a.zip", what="images_url", resolver=resolver(["93.184.216.34"]))
    assert (checked.host, checked.port, checked.addresses) == ("example.com", 443, ("93.184.216.34",))


@pytest.mark.parametrize(
    ("url", "addresses", "message"),
    [
        ("http://example.com/x", ["93.184.216.34"], "https://"),
        ("ftp://example.com/x", ["93.184.216.34"], "https://"),
        ("https://user:pw@example.com/x", ["93.184.216.34"], "credentials"),
        ("https://metadata.internal/x", ["169.254.169.254"], "link-local"),
        # a public name that also resolves to a private address (DNS rebinding) is refused
        ("https://rebind.example/x", ["93.184.216.34", "10.0.0.5"], "10.0.0.5"),
        ("https://example.com:99999/x", ["93.184.216.34"], "not a valid URL"),
    ],
)
def test_unsafe_urls_are_refused_with_the_reason(url, addresses, message):
    with pytest.raises(UnsafeUrl, match=message):
        check_url(url, what="webhook_url", resolver=resolver(addresses))


def test_the_local_override_admits_http_and_loopback_only_when_asked():
    checked = check_url("http://127.0.0.1:8000/hook", what="webhook_url", allow_local=True)
    assert checked.addresses == ("127.0.0.1",)
    with pytest.raises(UnsafeUrl):
        check_url("https://127.0.0.1:8000/hook", what="webhook_url")


def test_the_local_override_still_refuses_private_and_link_local_addresses():
    with pytest.raises(UnsafeUrl, match="169.254.169.254"):
        check_url("http://x/", what="webhook_url", allow_local=True, resolver=resolver(["169.254.169.254"]))
    with pytest.raises(UnsafeUrl, match="10.0.0.1"):
        check_url("http://x/", what="webhook_url", allow_local=True, resolver=resolver(["10.0.0.1"]))

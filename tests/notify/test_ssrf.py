"""Which webhook URLs may be called: checked after DNS resolution, refused on non-public addresses."""

from __future__ import annotations

import pytest

from nbrelay.notify.ssrf import UrlRefused, address_refused, parse_url, resolve


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_refused(address) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refused(address) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "example.com/hook",
        "http:///nohost",
        "http://u:p@example.com/",
        "http://example.com:99999/",
        "javascript:alert(1)",
    ],
)
def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        parse_url(url)


async def test_a_name_that_resolves_to_loopback_is_refused_unless_allowed() -> None:
    with pytest.raises(UrlRefused, match="loopback") as caught:
        await resolve("http://localhost:8080/hook", allow_private=False)
    assert caught.value.status == 422
    assert "NBRELAY_WEBHOOK_ALLOW_PRIVATE" in (caught.value.hint or "")
    target = await resolve("http://localhost:8080/hook?x=1", allow_private=True)
    assert target.address in ("127.0.0.1", "::1")
    assert target.host_header == "localhost:8080"
    assert target.pinned_url.endswith(":8080/hook?x=1")


async def test_literal_private_addresses_are_refused() -> None:
    for url in ("http://10.0.0.1/", "https://[::1]/", "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(UrlRefused):
            await resolve(url, allow_private=False)


async def test_unknown_host_is_refused() -> None:
    with pytest.raises(UrlRefused) as caught:
        await resolve("http://no-such-host.invalid/", allow_private=True)
    assert caught.value.code == "webhook_host_unknown"

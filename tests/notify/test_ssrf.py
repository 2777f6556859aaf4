"""Which webhook URLs may be called: checked after DNS resolution, refused on non-public addresses."""

from __future__ import annotations

import pytest

from nbrelay.notify.ssrf import Itself, UrlRefused, address_refused, parse_url, resolve


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
        "2002:a9fe:a9fe::",  # 6to4: 169.254.169.254 through a relay
        "2002:7f00:1::",  # 6to4: 127.0.0.1
        "2002:a00:1::1",  # 6to4: 10.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_refused(address) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::"])
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


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("169.254.169.254", "169.254.169.254 is a link-local address"),
        ("10.1.2.3", "10.1.2.3 is a private address"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),
        ("2002:a9fe:a9fe::", "2002:a9fe:a9fe:: is a 6to4 address for 169.254.169.254 (a link-local address)"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1 is an IPv4-mapped address for 127.0.0.1 (a loopback address)"),
    ],
)
def test_a_refusal_names_the_kind_of_address(address: str, why: str) -> None:
    assert address_refused(address) == why


async def test_a_refused_name_says_what_it_resolves_to_in_a_sentence() -> None:
    with pytest.raises(UrlRefused) as caught:
        await resolve("http://localhost:8080/hook", allow_private=False)
    assert caught.value.message in (
        "localhost resolves to 127.0.0.1, a loopback address; webhooks may only call public addresses",
        "localhost resolves to ::1, a loopback address; webhooks may only call public addresses",
    )
    with pytest.raises(UrlRefused, match=r"^2002:a9fe:a9fe:: is a 6to4 address for 169\.254\.169\.254"):
        await resolve("http://[2002:a9fe:a9fe::]/", allow_private=False)


@pytest.mark.parametrize(
    ("url", "itself"),
    [
        ("http://127.0.0.1:8765/api/schedules/1/run", Itself("127.0.0.1", 8765)),
        ("http://localhost:8765/api/schedules/1/run", Itself("127.0.0.1", 8765)),
        ("http://127.0.0.1:8765/api/schedules/1/run", Itself("localhost", 8765)),
        ("http://127.0.0.1:8765/", Itself("0.0.0.0", 8765)),
        ("http://localhost:9000/nbrelay/api/jobs", Itself("127.0.0.1", 8765, "http://localhost:9000/nbrelay")),
        ("http://127.0.0.1:9000/nbrelay/", Itself("127.0.0.1", 8765, "http://localhost:9000/nbrelay/")),
    ],
)
async def test_a_webhook_may_not_call_the_service_itself(url: str, itself: Itself) -> None:
    # A job.failed hook that runs the failing notebook's schedule would make jobs without end.
    with pytest.raises(UrlRefused, match="is this service itself") as caught:
        await resolve(url, allow_private=True, itself=itself)
    assert caught.value.status == 422 and caught.value.code == "webhook_calls_itself"


@pytest.mark.parametrize(
    ("url", "itself"),
    [
        ("http://127.0.0.1:8766/hook", Itself("127.0.0.1", 8765)),  # another port
        ("http://localhost:9000/other-app/hook", Itself("127.0.0.1", 8765, "http://localhost:9000/nbrelay")),
        ("http://localhost:9001/nbrelay/", Itself("127.0.0.1", 8765, "http://localhost:9000/nbrelay")),
    ],
)
async def test_other_services_beside_it_may_be_called(url: str, itself: Itself) -> None:
    await resolve(url, allow_private=True, itself=itself)

"""allowed_hosts patterns: normalisation, validation and matching."""

import pytest

from connect_service.hosts import (
    host_matches,
    is_host_allowed,
    normalize_host,
    url_host,
    validate_allowed_host_pattern,
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("API.Example.Com.", "api.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("ＥＸＡＭＰＬＥ。com", "example.com"),  # UTS46 maps full-width forms
        ("münchen.de", "xn--mnchen-3ya.de"),
        ("my_host.example.com", "my_host.example.com"),
        ("localhost", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("10.0.0.5", "10.0.0.5"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_normalize_host(host, expected):
    assert normalize_host(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "example..com",
        ".example.com",
        "example.com..",
        "*.example.com",
        "*",
        "exa mple.com",
        "example.com:443",
        "user@example.com",
        "example.com/path",
        "-example.com",
        "example-.com",
        "a" * 64 + ".example",
        ("a" * 60 + ".") * 5 + "com",  # > 253 characters
        "xn--zz.example",  # invalid punycode
        "%65xample.com",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "0x7f.0.0.1",
        "127.0.0.01",
        "1.2.3.4.5",
        "example.123",
        "fe80::1%eth0",
        None,
        123,
    ],
)
def test_normalize_host_rejects(host):
    with pytest.raises(ValueError):
        normalize_host(host)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("example.com", "example.com"),
        ("API.example.com.", "api.example.com"),
        ("  api.example.com ", "api.example.com"),
        ("*.example.com", "*.example.com"),
        ("*.Example.COM.", "*.example.com"),
        ("*.bücher.example.com", "*.xn--bcher-kva.example.com"),
        ("*.corp.internal", "*.corp.internal"),
        ("*.myproject.github.io", "*.myproject.github.io"),
        ("*.example.co.uk", "*.example.co.uk"),
        ("*.www.ck", "*.www.ck"),  # PSL exception rule: www.ck is registrable
        ("github.io", "github.io"),  # exact hosts may be anything
        ("10.0.0.5", "10.0.0.5"),
        ("[::1]", "::1"),
        ("2001:db8::1", "2001:db8::1"),
    ],
)
def test_validate_allowed_host_pattern_accepts(pattern, expected):
    assert validate_allowed_host_pattern(pattern) == expected


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "   ",
        "*",
        "*.",
        "**.example.com",
        "*.com",
        "*.COM.",
        "*.co.uk",
        "*.uk",
        "*.github.io",
        "*.s3.amazonaws.com",
        "*.herokuapp.com",
        "*.xn--p1ai",  # .рф
        "*.рф",
        "*.foo.ck",  # matched by the PSL wildcard rule *.ck
        "*.localhost",  # unknown TLDs count as public suffixes
        "*.example",
        "*.*.example.com",
        "a.*.example.com",
        "*example.com",
        "ex*mple.com",
        "example.*",
        "*.10.0.0.5",
        "https://example.com",
        "example.com/path",
        "example.com:443",
        "user@example.com",
        "example.com?x=1",
        "example.com#frag",
        "example.com\\x",
        "exa mple.com",
        "example..com",
        ".example.com",
        "0x7f000001",
        None,
    ],
)
def test_validate_allowed_host_pattern_rejects(pattern):
    with pytest.raises(ValueError):
        validate_allowed_host_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "target", "expected"),
    [
        # wildcard: exactly one extra label
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "https://a.example.com/path?q=1", True),
        ("*.example.com", "https://a.example.com:8443/", True),
        ("*.example.com", "A.EXAMPLE.COM.", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "https://example.com/", False),
        ("*.example.com", "evilexample.com", False),
        ("*.example.com", "a.evilexample.com", False),
        ("*.example.com", "example.com.evil.net", False),
        ("*.example.com", "a.example.com.evil.net", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "https://example.com@evil.net/", False),
        ("*.example.com", "https://a.example.com@evil.net/", False),
        ("*.example.com", "https://a.example.com\\@evil.net", False),
        ("*.example.com", "https://a.example.com\\.evil.net/", False),
        ("*.example.com", "https://evil.net/?a.example.com", False),
        ("*.example.com", "https://evil.net#.a.example.com", False),
        ("*.example.com", "//a.example.com/", False),
        ("*.example.com", "ftp://a.example.com/", False),
        ("*.bücher.example", "a.xn--bcher-kva.example", True),
        ("*.xn--bcher-kva.example", "https://a.bücher.example/", True),
        # exact
        ("example.com", "example.com", True),
        ("example.com", "EXAMPLE.com.", True),
        ("example.com", "https://Example.Com./x", True),
        ("example.com", "a.example.com", False),
        ("example.com", "evilexample.com", False),
        ("example.com", "example.com.evil.net", False),
        ("example.com", "https://example.com@evil.net/", False),
        ("evil.net", "https://example.com@evil.net/", False),  # user-info is never allowed
        ("example.com", "https://example.com\\@evil.net", False),
        ("bücher.example", "xn--bcher-kva.example", True),
        ("xn--bcher-kva.example", "https://BÜCHER.example/", True),
        ("10.0.0.5", "http://10.0.0.5:8080/", True),
        ("10.0.0.5", "http://10.0.0.50/", False),
        ("::1", "http://[::1]:8080/", True),
        ("127.0.0.1", "http://2130706433/", False),
        ("127.0.0.1", "http://0x7f000001/", False),
        # invalid patterns never match
        ("*.com", "example.com", False),
        ("*", "example.com", False),
        ("https://example.com", "https://example.com/", False),
    ],
)
def test_host_matches(pattern, target, expected):
    assert host_matches(pattern, target) is expected


@pytest.mark.parametrize("patterns", [[], (), None])
def test_empty_pattern_list_means_no_restriction(patterns):
    assert is_host_allowed(patterns, "https://anything.test/path") is True


@pytest.mark.parametrize(
    ("patterns", "url", "expected"),
    [
        (["api.example.com"], "https://api.example.com/v1", True),
        (["api.example.com"], "https://www.example.com/v1", False),
        (["*.example.com", "example.org"], "https://example.org/", True),
        (["*.example.com", "example.org"], "https://a.example.com/", True),
        (["*.example.com", "example.org"], "https://example.com/", False),
        (["*.example.com"], "https://example.com@evil.net/", False),
        (["*.example.com"], "https://a.example.com\\@evil.net", False),
        (["*.example.com"], "not a url", False),
        (["*.example.com"], "https://a.example.com:99999/", False),
        (["*.example.com"], "https://[::1/", False),
        # invalid stored patterns are skipped, the valid ones still apply
        (["*.com", "api.example.com"], "https://api.example.com/", True),
        (["*.com"], "https://api.example.com/", False),
    ],
)
def test_is_host_allowed(patterns, url, expected):
    assert is_host_allowed(patterns, url) is expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://Example.COM./a?b#c", "example.com"),
        ("http://[::1]:8080/", "::1"),
        ("http://127.0.0.1:5000/", "127.0.0.1"),
        ("https://bücher.example/", "xn--bcher-kva.example"),
    ],
)
def test_url_host(url, expected):
    assert url_host(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com@evil.net/",
        "https://user:pass@example.com/",
        "https://a.example.com\\@evil.net",
        "https://example.com\\",
        "https://exa mple.com/",
        "https://example.com/\x00",
        " https://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "javascript:alert(1)",
        "example.com",
        "//example.com/",
        "http:///path",
        "http://example.com:99999/",
        "http://example.com:port/",
        "http://[::1/",
        "http://2130706433/",
    ],
)
def test_url_host_rejects(url):
    with pytest.raises(ValueError):
        url_host(url)


def test_url_host_error_does_not_quote_the_url():
    with pytest.raises(ValueError) as info:
        url_host("http://example.com:secret-port/?token=abc")
    assert "secret" not in str(info.value)
    assert "abc" not in str(info.value)

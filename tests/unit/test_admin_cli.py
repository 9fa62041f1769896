"""`edgeproxy purge` / `edgeproxy entries`: arguments -> admin API request, where
the API is and which token it gets, and how answers and failures are printed.
No network here (tests/e2e/test_admin_cli.py runs them against a listener)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeproxy import cli
from edgeproxy.admin_client import (
    DEFAULT_ADMIN_URL,
    AdminClient,
    _http_error,
    admin_url,
    format_entries,
)
from edgeproxy.config import Address, AdminConfig, Config


@pytest.mark.parametrize(
    ("argv", "body"),
    [
        (["http://a.example/p?q=1"], {"url": "http://a.example/p?q=1"}),
        (["--prefix", "http://a.example/img/"], {"prefix": "http://a.example/img/"}),
        (["--tag", "product-42"], {"tag": "product-42"}),
        (["--tag", "a", "--tag", "b"], {"tags": ["a", "b"]}),
        (["--all"], {"all": True}),
        (["--all", "--host", "a.example"], {"all": True, "host": "a.example"}),
        (["--tag", "t", "--soft"], {"tag": "t", "soft": True}),
        (["--tag", "t", "--dry-run"], {"tag": "t", "dry_run": True}),
        (
            ["--all", "--soft", "--dry-run", "--admin", "http://x:1"],
            {"all": True, "soft": True, "dry_run": True},
        ),
    ],
)
def test_purge_arguments_become_the_request(argv: list[str], body: dict[str, Any]) -> None:
    args = cli._parser().parse_args(["purge", *argv])
    assert cli.purge_request(args) == body


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["purge"], id="no-target"),
        pytest.param(["purge", "http://a/", "--prefix", "http://a/"], id="url-and-prefix"),
        pytest.param(["purge", "--tag", "t", "--all"], id="tag-and-all"),
        pytest.param(["purge", "http://a/", "--all"], id="url-and-all"),
        pytest.param(["purge", "--tag"], id="tag-without-value"),
        pytest.param(["entries", "--limit", "ten"], id="limit-not-a-number"),
        pytest.param(["entries", "http://a/"], id="entries-positional"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "usage: edgeproxy" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["purge", "--tag", "t", "--host", "a"], "--host only goes with --all"),
        (["entries", "--limit", "0"], "--limit must be at least 1"),
        (["entries", "--limit", "-3"], "--limit must be at least 1"),
    ],
)
def test_checked_before_any_request(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # --admin points nowhere: these fail before connecting.
    assert cli.main([*argv, "--admin", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        (Address("127.0.0.1", 9191), "http://127.0.0.1:9191"),
        (Address("0.0.0.0", 9090), "http://127.0.0.1:9090"),  # every interface: use loopback
        (Address("::", 9090), "http://[::1]:9090"),
        (Address("::1", 9090), "http://[::1]:9090"),
        (Address("10.1.2.3", 80), "http://10.1.2.3:80"),
        (Address("localhost", 9090), "http://localhost:9090"),
    ],
)
def test_admin_url_from_config(listen: Address, url: str) -> None:
    assert admin_url(Config(admin=AdminConfig(listen=listen))) == url


def test_admin_url_default() -> None:
    assert admin_url(None) == DEFAULT_ADMIN_URL == "http://127.0.0.1:9090"


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("http://127.0.0.1:9090/", "http://127.0.0.1:9090"),
        ("127.0.0.1:9090", "http://127.0.0.1:9090"),  # the admin listener speaks plain HTTP
        ("https://admin.example", "https://admin.example"),
    ],
)
def test_admin_base_url(given: str, base: str) -> None:
    assert AdminClient(given, None).base_url == base


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "No such file"),
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"\xff\xfe", "not UTF-8"),
    ],
    ids=["missing", "empty", "blank", "not-utf8"],
)
def test_unusable_token_file_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: bytes | None,
    words: str,
) -> None:
    monkeypatch.delenv("EDGEPROXY_ADMIN_TOKEN", raising=False)
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_bytes(content)
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"admin:\n  token_file: {token_file}\n")
    assert cli.main(["purge", "--all", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edgeproxy: admin.token_file {token_file}")
    assert words in err
    assert err.count("\n") == 1


def test_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("admin:\n  listen: nowhere\n")
    assert cli.main(["entries", "--config", str(cfg)]) == 2
    assert "admin.listen" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "answer", "text", "sent_token", "message"),
    [
        (400, {"error": '"soft" must be true or false'}, "", True, 'HTTP 400: "soft" must be'),
        (
            401,
            {"error": "missing or invalid bearer token"},
            "",
            True,
            "HTTP 401: missing or invalid bearer token (the admin token is wrong",
        ),
        (401, {"error": "x"}, "", False, "(the admin token is not set: set EDGEPROXY_ADMIN_TOKEN"),
        (404, None, "404: Not Found", True, "HTTP 404: 404: Not Found"),
        (502, None, "<html>\n  bad\tgateway </html>", True, "HTTP 502: <html> bad gateway </html>"),
        (503, None, "", True, "HTTP 503: (no body)"),
    ],
)
def test_http_errors_read_as_one_line(
    status: int, answer: dict[str, Any] | None, text: str, sent_token: bool, message: str
) -> None:
    line = _http_error(status, answer, text, sent_token)
    assert message in line
    assert "\n" not in line


ENTRIES = {
    "count": 2,
    "truncated": False,
    "entries": [
        {
            "url": "http://a.example/v",
            "status": 200,
            "age": 10,
            "ttl": 50,
            "size": 1234,
            "soft_purged": False,
            "vary": {"accept-encoding": "gzip"},
            "tags": ["product-1", "list"],
        },
        {
            "url": "http://a.example/\x1b[31mred",
            "status": 404,
            "age": 700,
            "ttl": -100,
            "size": 0,
            "soft_purged": True,
            "vary": {},
            "tags": [],
        },
    ],
}


def test_entries_table() -> None:
    # Columns aligned; a control character from a stored URL is shown escaped.
    table = format_entries(ENTRIES).splitlines()
    assert [line.split() for line in table] == [
        ["STATUS", "AGE", "TTL", "SIZE", "FLAGS", "URL", "VARY", "TAGS"],
        [
            "200",
            "10",
            "50",
            "1234",
            "-",
            "http://a.example/v",
            "accept-encoding=gzip",
            "product-1",
            "list",
        ],
        ["404", "700", "-100", "0", "soft-purged", "http://a.example/\\x1b[31mred", "-", "-"],
        ["2", "entries"],
    ]
    # Every cell starts where its column's heading does.
    names = ["AGE", "TTL", "SIZE", "FLAGS", "URL", "VARY", "TAGS"]
    starts = [table[0].index(name) for name in names]
    for line in table[1:3]:
        assert [line[at - 2 : at] for at in starts] == ["  "] * len(names)
        assert all(line[at] != " " for at in starts)


def test_entries_table_empty_and_truncated() -> None:
    assert format_entries({"entries": [], "truncated": False}).splitlines()[-1] == "0 entries"
    one = {**ENTRIES, "entries": ENTRIES["entries"][:1], "truncated": True}  # type: ignore[index]
    assert format_entries(one).splitlines()[-1] == (
        "1 entry (more stored: raise --limit or narrow --prefix/--tag)"
    )

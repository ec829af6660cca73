"""No fragment of a secret in any output of the real CLI (in-process): database URLs that
read more than one way, passwords decoded and as written, config-file errors and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Run

PASSWORDS_IN_URLS = {
    # Unencoded @ / ? # %, [ or a space in the password: the URL reads more than one way.
    "Tr0ub@dor&3": "postgresql://etl:Tr0ub@dor&3@127.0.0.1:1/cowrie",
    "Zq/x9K": "postgresql://etl:Zq/x9K@127.0.0.1:1/cowrie",
    "Wv#7Jp": "postgresql://etl:Wv#7Jp@127.0.0.1:1/cowrie",
    "Yk?4Lm": "postgresql://etl:Yk?4Lm@127.0.0.1:1/cowrie",
    "Hx@Qz/9#R": "postgresql://etl:Hx@Qz/9#R@db.example/cowrie",
    "Gb%zz8": "postgresql://etl:Gb%zz8@127.0.0.1:1/cowrie",
    "Nm[4Vt": "postgresql://etl:Nm[4Vt@127.0.0.1:1/cowrie",
    "Jd 5Ws": "postgresql://etl:Jd 5Ws@127.0.0.1:1/cowrie",
    "Qe:7Zu": "postgresql://etl:Qe:7Zu@127.0.0.1:99999/cowrie",
    "Bv9Ka3": "postgresql://etl:Bv9Ka3@db.example:5432",
}


def fragments(secret: str) -> set[str]:
    """Every 3-character piece of a secret (all of it when shorter)."""
    return {secret[i : i + 3] for i in range(max(1, len(secret) - 2))}


def leaked(secret: str, output: str) -> set[str]:
    return {piece for piece in fragments(secret) if piece in output}


@pytest.mark.parametrize("password", sorted(PASSWORDS_IN_URLS))
def test_a_url_that_reads_more_than_one_way_is_refused_without_a_fragment_of_it(
    run: Run, password: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an option, in ETL_DB_URL and in etl.toml: exit 2, one line, no 3-character piece
    of the password (today a piece of it showed in a host-name error, or a port error)."""
    url = PASSWORDS_IN_URLS[password]
    toml = tmp_path / "etl.toml"
    toml.write_text(f"db = {json.dumps(url)}\n")
    for how in ("option", "env", "file"):
        args = ["--db", url] if how == "option" else ["--config", str(toml)] * (how == "file")
        if how == "env":
            monkeypatch.setenv("ETL_DB_URL", url)
        code, output = run(*args, "--skip", "maxmind")
        monkeypatch.setenv("ETL_DB_URL", "")
        assert code == 2, (how, output)
        assert len(output.splitlines()) == 1 and output.startswith("error: "), output
        assert not leaked(password, output), (how, output)
    if any(c in password for c in "@/?#%"):
        assert "percent-encode" in output and "%40" in output


@pytest.mark.parametrize(
    ("password", "url"),
    [
        ("Fj@Lk9", "postgresql://etl:Fj%40Lk9@127.0.0.1:1/cowrie"),
        ("Rt5Uy8", "postgresql://etl@127.0.0.1:1/cowrie?password=Rt5Uy8"),
    ],
)
def test_a_password_is_hidden_decoded_and_as_written(run: Run, password: str, url: str) -> None:
    code, output = run("--db", url, "--skip", "maxmind", "--skip", "cymru")
    assert code == 1, output
    assert "cannot connect to PostgreSQL" in output
    written = url.split("etl", 1)[1]
    assert not leaked(password, output) and "%40Lk" not in output and written not in output


KEY = "Kq9Zx7WmPv"


@pytest.mark.parametrize(
    "text",
    [
        f"greynoise_api_key = {12345678}\n",
        f'greynoise_api_key = ["{KEY}"]\n',
        f'greynoise_api_key = {{ key = "{KEY}" }}\n',
        f"greynoise_api_key = {KEY}\n",  # not quoted: not TOML
        f'greynoise_api_key = "{KEY}\n',  # not closed
        f'greynoise_api_key = "{KEY}"\nips = "ten"\n',
        f'greynoise_api_key = "{KEY}"\ndb = "postgresql://etl:{KEY}@x@h/db"\n',
        f'greynoise_api_key = "{KEY}"\n[greynoise]\nkey = 1\n',
        f'greynoise_api_key = "{KEY}"\n',  # good, but the database does not exist
    ],
)
def test_config_file_errors_show_no_fragment_of_the_key(
    run: Run, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each a single line (the warning about a file others can read waits for the run to
    start), with no piece of the key."""
    monkeypatch.chdir(tmp_path)  # the default database, data/honeypot.sqlite, does not exist
    toml = tmp_path / "etl.toml"
    toml.write_text(text)
    toml.chmod(0o644)
    code, output = run("--config", str(toml))
    assert code == 2, output
    assert len(output.splitlines()) == 1 and output.startswith("error: "), output
    secret = "12345678" if "12345678" in text else KEY
    assert not leaked(secret, output), output


@pytest.mark.parametrize("key", ["k", "1", "ok"])
def test_a_short_key_does_not_mangle_the_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """A key "k" or "1" once turned every k and 1 of the summary JSON into *** (its keys and
    numbers too: not JSON any more) and of every line."""
    from etl.core.vocabulary import Source
    from etl.refresh.config import RefreshConfig
    from etl.refresh.monitored import monitored_refresh
    from testbed.sample.build import build_sample

    db, summary_json, status = tmp_path / "h.sqlite", tmp_path / "s.json", tmp_path / "st.json"
    build_sample(f"sqlite:///{db}", 300, seed=1, maxmind_dir=tmp_path)
    config = RefreshConfig(
        db_url=f"sqlite:///{db}", maxmind_dir=tmp_path, skip=frozenset({Source.CYMRU}),
        greynoise_api_key=key, greynoise_url="http://127.0.0.1:9", quiet=True,
        summary_json=summary_json, status_file=status,
    )  # fmt: skip
    summary = monitored_refresh(config)
    data, state = json.loads(summary_json.read_text()), json.loads(status.read_text())
    assert data["selected"] == summary.selected > 100 and "ok" in data["sources"]["greynoise"]
    assert "ok" in state["sources"]["maxmind"]
    assert "keep their old blocks" in data["stopped"]["greynoise"]["message"]
    assert "***" not in summary.table()


def test_a_short_password_is_still_hidden_in_urls() -> None:
    from etl.db.url import redact, redacted

    text = "cannot connect to postgresql://etl:pw@127.0.0.1:1/cowrie (password=pw, pwd)"
    shown = "cannot connect to postgresql://etl:***@127.0.0.1:1/cowrie (password=***, pwd)"
    assert redact(text, ("pw",)) == shown
    assert redacted({"ok": 1, "notes": ["key Kq9Zx7Wm"]}, ("Kq9Zx7Wm",)) == {
        "ok": 1,
        "notes": ["key ***"],
    }

"""Who may use ``headmap serve``: loopback is open, any other address needs a login or ``--open``,
and a password never comes from the command line. Checked without starting a server."""

from __future__ import annotations

import pytest

from headmap import HeadmapError
from headmap.cli import main
from headmap.serve.access import credentials, exposure_problem, is_loopback, parse_credentials


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("myhost.example", False),
    ],
)
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_credentials_from_a_file_and_the_environment(tmp_path):
    path = tmp_path / "logins"
    path.write_text("# team\nana:s3cret:with:colons\n\nbob: pw\n")
    assert credentials(str(path), {}) == [("ana", "s3cret:with:colons"), ("bob", " pw")]
    assert credentials(None, {"HEADMAP_AUTH": "eve:x,joe:y"}) == [("eve", "x"), ("joe", "y")]
    assert credentials(str(path), {"HEADMAP_AUTH": "eve:x"})[-1] == ("eve", "x")
    assert credentials(None, {}) == []
    with pytest.raises(HeadmapError, match="user:password"):
        parse_credentials("ana", "HEADMAP_AUTH")
    with pytest.raises(HeadmapError, match="user:password"):
        parse_credentials("ana:", "HEADMAP_AUTH")
    with pytest.raises(HeadmapError, match="cannot read it"):
        credentials(str(tmp_path / "missing"), {})
    (tmp_path / "empty").write_text("# nobody\n")
    with pytest.raises(HeadmapError, match="holds no user:password"):
        credentials(str(tmp_path / "empty"), {})


def test_exposure_needs_a_login_or_open():
    assert exposure_problem("127.0.0.1", [], False) is None
    assert exposure_problem("0.0.0.0", [("a", "b")], False) is None
    assert exposure_problem("0.0.0.0", [], True) is None
    problem = exposure_problem("0.0.0.0", [], False)
    assert problem is not None and "\n" not in problem
    assert all(fix in problem for fix in ("--auth-file FILE", "HEADMAP_AUTH=user:password", "--open"))


@pytest.fixture
def fake_server(monkeypatch):
    """The serve command with a workbench and a launch that only record what they were given."""
    import headmap.serve.app
    import headmap.serve.workbench

    seen: dict[str, object] = {}

    class Bench:
        default_model = "minilm"

        def __init__(self, *args, **kwargs):
            seen["bench"] = kwargs

        def info(self, name):
            return None

    class Server:
        @property
        def is_running(self):
            raise KeyboardInterrupt  # stop at once, as Ctrl-C does

        def close(self):
            seen["closed"] = True

    def launch(bench, **kwargs):  # type: ignore[no-untyped-def]
        seen["launch"] = kwargs
        return Server()

    monkeypatch.setattr(headmap.serve.workbench, "Workbench", Bench)
    monkeypatch.setattr(headmap.serve.app, "launch", launch)
    monkeypatch.delenv("HEADMAP_AUTH", raising=False)
    return seen


def refused(capsys, argv: list[str]) -> str:
    """Exit status 2 and one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_open_network_address_is_refused_before_any_model_loads(fake_server, capsys):
    line = refused(capsys, ["serve", "--host", "0.0.0.0"])
    assert all(fix in line for fix in ("--auth-file FILE", "HEADMAP_AUTH=user:password", "--open"))
    assert "bench" not in fake_server and "launch" not in fake_server


def test_a_password_on_the_command_line_is_refused(fake_server, capsys):
    line = refused(capsys, ["serve", "--auth", "ana:s3cret"])
    assert "--auth-file FILE" in line and "HEADMAP_AUTH" in line and "s3cret" not in line
    assert "bench" not in fake_server


def test_logins_and_limits_reach_the_server(fake_server, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HEADMAP_AUTH", "ana:s3cret")
    argv = ["serve", "--host", "0.0.0.0", "--max-concurrent", "2", "--max-text-chars", "500"]
    assert main(argv) == 130
    assert fake_server["launch"]["auth"] == [("ana", "s3cret")]  # type: ignore[index]
    assert fake_server["launch"]["max_concurrent"] == 2  # type: ignore[index]
    assert fake_server["bench"]["max_text_chars"] == 500  # type: ignore[index]
    assert "login required (1 user)" in capsys.readouterr().out
    monkeypatch.delenv("HEADMAP_AUTH")
    logins = tmp_path / "logins"
    logins.write_text("bob:pw\n")
    assert main(["serve", "--host", "0.0.0.0", "--auth-file", str(logins)]) == 130
    assert fake_server["launch"]["auth"] == [("bob", "pw")]  # type: ignore[index]
    assert main(["serve", "--host", "0.0.0.0", "--open"]) == 130
    assert fake_server["launch"]["auth"] == []  # type: ignore[index]
    assert "open to everyone" in capsys.readouterr().out
    assert main(["serve", "--max-concurrent", "0"]) == 1
    assert "positive numbers" in capsys.readouterr().err

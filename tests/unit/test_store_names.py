"""Name validation: every hostile or malformed tenant, service and variable name is refused clearly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commy.errors import BAD_REQUEST, RemoteProtocolError
from commy.store.names import MAX_NAME, check_service, check_tenant, check_variable

PATH_CHECKS = [(check_tenant, "tenant"), (check_service, "service")]


def refusal(check: object, name: object) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        check(name)  # type: ignore[operator]
    assert info.value.code == BAD_REQUEST
    return info.value


def test_max_name() -> None:
    assert MAX_NAME == 64


@pytest.mark.parametrize(("check", "kind"), PATH_CHECKS)
@pytest.mark.parametrize("name", ["a", "A", "0", "a.b", "a-b_c.D9", "x" * 64, "9lives", "con-1", "comma", "COM0",
                                  "LPT10", "nulx"])
def test_good_path_names_pass_unchanged(check: object, kind: str, name: str) -> None:
    assert check(name) == name  # type: ignore[operator]


@pytest.mark.parametrize(("check", "kind"), PATH_CHECKS)
@pytest.mark.parametrize(("name", "reason"), [
    ("", "must not be empty"),
    (".", "'.' is not allowed"),
    ("..", "'..' is not allowed"),
    ("/", "must start with a letter or digit"),
    ("a/b", "only letters, digits"),
    ("a\\b", "only letters, digits"),
    ("../etc", "must start with a letter or digit"),
    ("a\x00b", "only letters, digits"),
    ("\x00", "must start with a letter or digit"),
    (" a", "must start with a letter or digit"),
    ("a b", "only letters, digits"),
    ("a\n", "only letters, digits"),
    (".hidden", "must start with a letter or digit"),
    ("-rf", "must start with a letter or digit"),
    ("_x", "must start with a letter or digit"),
    ("é", "must start with a letter or digit"),
    ("aé", "only letters, digits"),
    ("x" * 65, "must be at most 64 characters"),
    ("x" * 10_000, "must be at most 64 characters"),
    ("CON", "reserved device name"),
    ("con", "reserved device name"),
    ("Nul.txt", "reserved device name"),
    ("aux", "reserved device name"),
    ("PRN", "reserved device name"),
    ("com1", "reserved device name"),
    ("COM9.log", "reserved device name"),
    ("lpt1", "reserved device name"),
    ("LPT9", "reserved device name"),
])
def test_bad_path_names_are_refused_with_the_reason(check: object, kind: str, name: str, reason: str) -> None:
    err = refusal(check, name)
    assert err.detail.startswith(f"{kind} name: ")
    assert reason in err.detail
    assert len(err.detail) < 160  # a 10 kB name is not echoed back


@pytest.mark.parametrize("check", [check_tenant, check_service, check_variable])
@pytest.mark.parametrize("name", [None, 5, b"abc", ["a"], 1.5, object()])
def test_non_strings_are_refused(check: object, name: object) -> None:
    err = refusal(check, name)
    assert "must be a string, not" in err.detail and type(name).__name__ in err.detail


def test_hostile_name_is_shown_short_and_repred() -> None:
    err = refusal(check_service, "/" + "A" * 60)
    assert "'/AAAA" in err.detail and "..." in err.detail and "A" * 50 not in err.detail


@pytest.mark.parametrize("name", ["x", "temperature", "a/b", "..", " spaced ", "é" * 32, "x" * 64, "日本語",
                                  "with.dots-and_underscores", "emoji\U0001f600"])
def test_good_variable_names_pass(name: str) -> None:
    assert check_variable(name) == name


@pytest.mark.parametrize(("name", "reason"), [
    ("", "must not be empty"),
    ("x" * 65, "at most 64 bytes"),
    ("x" * 10_000, "at most 64 bytes"),
    ("é" * 33, "at most 64 bytes"),  # 33 characters, 66 bytes
    ("a\x00b", "control characters"),
    ("\x00", "control characters"),
    ("line\n", "control characters"),
    ("tab\there", "control characters"),
    ("del\x7f", "control characters"),
    ("c1\x85", "control characters"),
    ("lone\ud800", "valid UTF-8"),
])
def test_bad_variable_names_are_refused(name: str, reason: str) -> None:
    err = refusal(check_variable, name)
    assert err.detail.startswith("variable name: ") and reason in err.detail


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=80))
def test_accepted_path_names_are_safe_file_names(name: str) -> None:
    try:
        check_service(name)
    except RemoteProtocolError:
        return
    assert 1 <= len(name) <= MAX_NAME and name not in (".", "..")
    assert not set(name) & set("/\\\x00 \t\n:*?\"<>|") and name[0].isalnum()

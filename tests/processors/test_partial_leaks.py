"""Partial leaks: a password's tail after a special char, street addresses, names in their contexts."""

from __future__ import annotations

from functools import cache

import pytest

from processors.pii import PIIScanner
from processors.scanning import Scanner
from processors.secret_scanner import SecretScanner

SCANNERS = ("secret", "pii")


@cache
def scanner(name: str) -> Scanner:
    return SecretScanner() if name == "secret" else PIIScanner()


class TestPasswordTail:
    @pytest.mark.parametrize("which", SCANNERS)
    @pytest.mark.parametrize(
        "text",
        [
            "password=Tr0ub4dor&3xyz!q",
            "login password=Tr0ub4dor&3-horse! now",
            "my password is Tr0ub4dor&3-horse!",
            "Tr0ub4dor&3-horse!",
            "pwd: Tr0ub4dor;3-horse!, retrying",
            "reset to Tr0ub4dor&3-horse! by admin",
        ],
    )
    def test_the_whole_password_goes(self, which: str, text: str) -> None:
        """A password is masked up to whitespace or a quote, special chars and all: no tail survives."""
        out = scanner(which).redact(text)
        assert [] == [piece for piece in ("Tr0ub", "xyz!q", "horse", "&3", ";3") if piece in out]

    @pytest.mark.parametrize("which", SCANNERS)
    def test_the_next_pair_stays(self, which: str) -> None:
        """``&`` ends the value where a ``key=`` pair follows it."""
        out = scanner(which).redact("login password=Tr0ub4dor&next=1")
        assert (True, False) == (out.endswith("&next=1"), "Tr0ub" in out)


class TestStreetAddresses:
    @pytest.mark.parametrize("which", SCANNERS)
    @pytest.mark.parametrize(
        ("text", "words"),
        [
            ("ship to 42 Baker Street, London", ("Baker",)),
            ("ship to 1600 pennsylvania ave nw today", ("pennsylvania",)),
            ("lives at 12b rose lane", ("rose",)),
            ("lives at 221B baker st.", ("baker",)),
            ("send to Rue des Lilas 42, 75011 Paris", ("Lilas", "75011")),
            ("send to Hauptstraße 5, 10115 Berlin", ("Haupt", "10115")),
            ("send to Calle Mayor 5", ("Mayor",)),
        ],
    )
    def test_address_is_masked(self, which: str, text: str, words: tuple[str, ...]) -> None:
        """Number + street name + suffix (and the European order) is a STREET_ADDRESS, masked."""
        out = scanner(which).redact(text)
        assert ("<STREET_ADDRESS>" in out, []) == (True, [w for w in words if w in out])

    @pytest.mark.parametrize(
        "text",
        ["1 on the way", "3 in a row", "retry 2 times via the main road", "waited 5 minutes", "top 10 st"],
    )
    def test_phrases_are_not_addresses(self, text: str) -> None:
        """A number before an everyday phrase that ends in a suffix word is not an address."""
        assert "STREET_ADDRESS" not in {f.entity for f in SecretScanner().findings(text)}


class TestNamesInContext:
    @pytest.mark.parametrize("which", SCANNERS)
    @pytest.mark.parametrize(
        "text",
        [
            "name=amélie durand",
            "my name is amélie durand",
            "MY NAME IS Amélie Durand",
            "Dear amélie durand, your order",
            "From: amélie durand",
            '{"full_name": "amélie durand"}',
            "first_name: amélie",
        ],
    )
    def test_name_is_masked(self, which: str, text: str) -> None:
        """A name after ``name=``, ``my name is``, ``Dear`` or ``From:`` is masked, whatever its case."""
        out = scanner(which).redact(text).lower()
        assert ("<person>" in out, "amélie" in out, "durand" in out) == (True, False, False)

    @pytest.mark.parametrize(
        "text", ["filename=report.pdf", "tool name=get_user", "hostname: db", "name=bob action=x"]
    )
    def test_identifiers_and_next_pairs_stay(self, text: str) -> None:
        """Other keys ending in ``name``, identifiers and the next ``key=`` pair are not names."""
        found = SecretScanner().findings(text)
        assert [] == [text[f.start : f.end] for f in found if text[f.start : f.end] not in ("bob",)]

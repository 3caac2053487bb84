"""SecretScanner: one positive per entity, the hard negatives, every canary needle, hostile text."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.scanning import Finding, Scanner
from processors.secret_scanner import SecretScanner, _triggered
from tests.conftest import Canaries

SCANNER = SecretScanner()

POSITIVES = [
    ("EMAIL_ADDRESS", "write to jane.doe+tag@mail.example.co.uk today", "jane.doe+tag@mail.example.co.uk"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 declined", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "card 4111-1111-1111-1111 declined", "4111-1111-1111-1111"),
    ("CREDIT_CARD", "amex 378282246310005 ok", "378282246310005"),
    ("US_SSN", "ssn 078-05-1120 on file", "078-05-1120"),
    ("PHONE_NUMBER", "call +44 20 7946 0958 now", "+44 20 7946 0958"),
    ("PHONE_NUMBER", "call (212) 555-0199 now", "(212) 555-0199"),
    ("PHONE_NUMBER", "call 212.555.0199 now", "212.555.0199"),
    ("PHONE_NUMBER", "call +4915112345678 now", "+4915112345678"),
    ("IBAN_CODE", "iban DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"),
    ("IP_ADDRESS", "from 192.168.10.254, retrying", "192.168.10.254"),
    ("IP_ADDRESS", "client_ip_10.1.2.3 seen", "10.1.2.3"),
    (
        "IP_ADDRESS",
        "from 2001:0db8:85a3:0000:0000:8a2e:0370:7334 ok",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    ),
    ("IP_ADDRESS", "from fe80::1ff:fe23:4567:890a ok", "fe80::1ff:fe23:4567:890a"),
    (
        "JWT",
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk here",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    ),
    ("AWS_ACCESS_KEY", "key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
    ("AWS_ACCESS_KEY", "key ASIAY34FZKBOKMUTVV7A used", "ASIAY34FZKBOKMUTVV7A"),
    (
        "AWS_SECRET_KEY",
        "aws secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY set",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("BEARER_TOKEN", "header Bearer abc.def-ghi sent", "abc.def-ghi"),
    ("BEARER_TOKEN", "Authorization: Basic dXNlcjpwYXNzd29yZA==", "Basic dXNlcjpwYXNzd29yZA=="),
    ("URL_CREDENTIALS", "dsn mysql://admin:s3cr3t@db:3306/app", "admin:s3cr3t"),
    ("URL_CREDENTIALS", "GET https://x.example/cb?code=abc&access_token=zzTopSecret&page=1", "zzTopSecret"),
    ("URL_CREDENTIALS", "GET https://x.example/f?X-Amz-Signature=0a1b2c3d4e5f&y=1", "0a1b2c3d4e5f"),
    (
        "PRIVATE_KEY",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAverysecret\n-----END RSA PRIVATE KEY-----",
        "MIIEpAIBAAKCAQEAverysecret",
    ),
    (
        "PRIVATE_KEY",
        "pasted -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA",
        "b3BlbnNzaC1rZXktdjEAAAA",
    ),
    ("API_KEY", "stripe sk_test_4eC39HqLyjWDarjtT1zdp7dc ok", "sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
    (
        "API_KEY",
        "gh ghp_16C7e42F292c6912E7710c838347Ae178B4a now",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    ),
    ("API_KEY", "slack xoxb-123456789012-abcdefABCDEF ok", "xoxb-123456789012-abcdefABCDEF"),
    ("API_KEY", "slack xoxp-abcdefgh ok", "xoxp-abcdefgh"),
    (
        "API_KEY",
        "google AIzaSyA-1234567890abcdefghijklmnopqrstu ok",
        "AIzaSyA-1234567890abcdefghijklmnopqrstu",
    ),
    ("API_KEY", "config api_key=plainvalue", "plainvalue"),
    ("PASSWORD", "login password=correcthorse&next=1", "correcthorse"),
    ("PASSWORD", 'json {"password": "two words"}', "two words"),
    ("PASSWORD", "the pwd: battery", "battery"),
    ("PASSWORD", "my password is tr0ub4dor now", "tr0ub4dor"),
    ("HIGH_ENTROPY_TOKEN", "session Zk9mQ2xwR3h0Vm5KbGRHbG4 ok", "Zk9mQ2xwR3h0Vm5KbGRHbG4"),
    ("HIGH_ENTROPY_TOKEN", "blob QWxhZGRpbkpvcGVuU2VzYW1l ok", "QWxhZGRpbkpvcGVuU2VzYW1l"),
    ("SUSPICIOUS_TOKEN", "code a8Xk2Lm9 ok", "a8Xk2Lm9"),
    ("SUSPICIOUS_TOKEN", "pass hunter2-BLUE-p4ss-1234 ok", "hunter2-BLUE-p4ss-1234"),
    ("SUSPICIOUS_TOKEN", "use staging-db-pass-77 here", "staging-db-pass-77"),
    ("SUSPICIOUS_TOKEN", "customer Élodie Dürrenmatt called", "Élodie"),
]

HARD_NEGATIVES = [
    "2024-01-15T10:30:00Z",
    "2024-01-15T10:30:00.123456+00:00",
    "at 2024-01-15 10:30:00,123 in 20240115T103000Z",
    "released 1.2.3 and v2.10.0-rc1 and 0.1.0.dev3",
    "request 550e8400-e29b-41d4-a716-446655440000 done",
    "req-550e8400-e29b-41d4-a716-446655440000 done",
    "order ORD-2024-001234 shipped",
    "retry 3 of 10 in 250 ms, status 404",
    "GET /api/v1/users/42/orders 200",
    "The quick brown fox jumps over the lazy dog.",
    "max_connection_pool_size_v2 user_id_2fa_enabled",
    "colour #1a2b3c, #fff and #1a2b3cff",
    "password reset requested; the token expired; secret sauce",
    "model gpt-4o-mini-2024-07-18 on python3.11-slim-bookworm",
    "sha256 checksum of utf-8 text in x86_64",
    "port 8080 on localhost:8080 took 12.5s",
    "RequestBodyContentLength internationalization",
    "HTTP/1.1 404 Not Found",
    "elapsed_ms=1234 count: 5 page=2",
    "see https://example.com/docs?page=2&sort=asc#top",
    "/static/js/app.min.js",
    "réservé à la réception",
]


class TestPositives:
    @pytest.mark.parametrize(
        ("entity", "text", "secret"), POSITIVES, ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(POSITIVES)]
    )
    def test_entity_is_found_and_masked(self, entity: str, text: str, secret: str) -> None:
        """The entity is reported and its value does not survive redaction."""
        found = SCANNER.findings(text)
        redacted = SCANNER.redact(text)
        assert (True, False) == (entity in {f.entity for f in found}, secret in redacted)

    def test_redact_uses_entity_markers(self) -> None:
        """A masked span reads <ENTITY>."""
        assert "mail <EMAIL_ADDRESS> now" == SCANNER.redact("mail a@example.org now")

    def test_url_userinfo(self) -> None:
        """URL userinfo is masked whole; scheme, port and path stay."""
        redacted = SCANNER.redact("postgresql://app:pw-31@db.internal:5432/prod")
        assert (True, False, False) == (
            redacted.startswith("postgresql://<"),
            "app" in redacted,
            "pw-31" in redacted,
        )
        assert redacted.endswith(":5432/prod")

    def test_card_next_to_other_digit_groups(self) -> None:
        """A card glued to other digit groups is found past a Luhn-invalid first candidate."""
        assert "4444" not in SCANNER.redact("ids 7731 5555 5555 5555 4444 and 5555 5555 5555 4444 123")

    def test_password_before_punctuation_is_english(self) -> None:
        """``password reset.`` is a sentence, not a credential."""
        assert [] == SCANNER.findings("password reset. token expired; secret sauce!")

    def test_luhn_invalid_number_is_not_a_card(self) -> None:
        """Sixteen digits failing Luhn are no credit card."""
        assert "CREDIT_CARD" not in {f.entity for f in SCANNER.findings("ref 4111 1111 1111 1112")}

    def test_iban_with_bad_checksum_is_not_an_iban(self) -> None:
        """An IBAN-shaped string failing mod-97 is not reported as IBAN_CODE."""
        assert "IBAN_CODE" not in {f.entity for f in SCANNER.findings("iban GB00WEST12345698765432")}

    def test_invalid_ipv4_octet(self) -> None:
        """999.1.1.1 is not an IP address."""
        assert [] == SCANNER.findings("value 999.1.1.1 seen")


# Each of these once survived redaction: (text, the redacted text).
LEAKS = [
    ("phone=798.207.9972x553 saved", "phone=<PHONE_NUMBER> saved"),
    ("SMS to 001-280-780-1075x531 failed", "SMS to <PHONE_NUMBER> failed"),
    ("call (820)652-8073 ext. 9044 now", "call <PHONE_NUMBER> now"),
    ("call +1-561-400-7878x07152 now", "call <PHONE_NUMBER> now"),
    ("call 834-181-9865 now", "call <PHONE_NUMBER> now"),
    ("call +44(0)121 496 0377 now", "call <PHONE_NUMBER> now"),
    ("call +49(0)5555622209 now", "call <PHONE_NUMBER> now"),
    ("call (0161) 496 0352 now", "call <PHONE_NUMBER> now"),
    ("call 020 7946 0432 now", "call <PHONE_NUMBER> now"),
    ("SMS to 0389255503 failed", "SMS to <PHONE_NUMBER> failed"),
    ("phone: 4006976235", "phone: <PHONE_NUMBER>"),
    ("ids 42 415 555 0137 42", "ids 42 <PHONE_NUMBER> 42"),
    (
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_SECRET_ACCESS_KEY=<AWS_SECRET_KEY>",
    ),
    (
        "aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key: <AWS_SECRET_KEY>",
    ),
    (
        '{"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}',
        '{"aws_secret_access_key": "<AWS_SECRET_KEY>"}',
    ),
    ("secretAccessKey=abcdefghijklmnopqrstuvwxyzabcdefghijklmn", "secretAccessKey=<AWS_SECRET_KEY>"),
    (
        "connecting to postgresql://aaron07:BN(23aT)$MD#SE#8@db-7:5432/app",
        "connecting to postgresql://<URL_CREDENTIALS>@db-7:5432/app",
    ),
    ("ssn:536228726 ok", "ssn:<US_SSN> ok"),
    ("SSN 536-22-8726 ok", "SSN <US_SSN> ok"),
    ("ssn=536228726 ok", "ssn=<US_SSN> ok"),
    ("user_ssn=936228726 ok", "user_ssn=<US_SSN> ok"),
    ('{"SSN": "536 22 8726"}', '{"SSN": "<US_SSN>"}'),
    ("social security number 355599945 on file", "social security number <US_SSN> on file"),
]

# Digit strings shaped like the leaks above that are not personal data.
LOOKALIKES = [
    "account 4006976235 synced 12 records",
    "user_id=536228726 opened dashboard",
    "lot 0389255503 and order ORD-2024-001234",
    "mission 2024-01-15 at 10:30, tel 2024",
    "ssn_last4=8726 matched",
]


class TestLeaks:
    @pytest.mark.parametrize(("text", "expected"), LEAKS)
    def test_value_is_masked(self, text: str, expected: str) -> None:
        """A value that once leaked is masked whole (a phone number with its extension)."""
        assert expected == SCANNER.redact(text)

    @pytest.mark.parametrize("text", LOOKALIKES)
    def test_unlabelled_numbers_stay(self, text: str) -> None:
        """Without a label or a phone shape, ids stay readable."""
        assert [] == SCANNER.findings(text)

    @pytest.mark.parametrize(
        "text",
        [
            "wire to FR84 7501 9920 4538 0580 3355 860 ok",
            "card 6570 0753 4716 6620 ok",
            "ssn 002-49-6635 ok",
        ],
    )
    def test_groups_of_other_numbers_are_not_phones(self, text: str) -> None:
        """Digit groups inside a spaced IBAN, a card or an SSN are not phone numbers."""
        assert "PHONE_NUMBER" not in {f.entity for f in SCANNER.findings(text)}

    @settings(max_examples=200, deadline=None)
    @given(
        number=st.from_regex(r"\A[2-9][0-9]{2}([.-])[0-9]{3}\1[0-9]{4}\Z"),
        ext=st.from_regex(r"\A(x|ext\. ?| x)[0-9]{1,6}\Z"),
    )
    def test_phone_extension_never_survives(self, number: str, ext: str) -> None:
        """A NANP number with any extension is masked, extension included."""
        redacted = SCANNER.redact(f"phone {number}{ext} saved")
        assert "phone <PHONE_NUMBER> saved" == redacted


class TestHardNegatives:
    @pytest.mark.parametrize("text", HARD_NEGATIVES)
    def test_not_flagged(self, text: str) -> None:
        """Everyday log text stays readable."""
        assert [] == SCANNER.findings(text)


def whole_needles(canaries: Canaries) -> list[str]:
    """The needles that are secrets on their own: not a fragment of a planted value (``horse!`` is the
    tail of a password: it is looked for, so a partial leak shows, but alone it is an ordinary word)."""
    values = list(canaries.values.values())
    return [n for n in canaries.needles if not any(n != v and n in v for v in values)]


class TestCanaries:
    @pytest.mark.parametrize(
        "template", ["note: {} was seen", "{}", "({})", "x={}, y=2", "line one\n{}\nline three", '"{}"']
    )
    def test_every_needle_masked_in_free_text(self, canaries: Canaries, template: str) -> None:
        """Every needle planted in free text is masked completely."""
        leaked = [n for n in whole_needles(canaries) if canaries.leaks(SCANNER.redact(template.format(n)))]
        assert [] == leaked

    def test_every_value_masked_in_free_text(self, canaries: Canaries) -> None:
        """Every canary value (URLs, PEM blocks, names) is masked where it holds a needle."""
        leaked = [k for k, v in canaries.values.items() if canaries.leaks(SCANNER.redact(f"got {v} back"))]
        assert [] == leaked

    @settings(max_examples=80, deadline=None)
    @given(data=st.data())
    def test_needles_in_random_prose(self, canaries: Canaries, data: st.DataObject) -> None:
        """Needles mixed into random words and separators are all masked."""
        words = st.sampled_from(
            ["the", "user", "id", "42", "ok", "ORD-2024-001234", "v1.2.3", "/api/v1", "é"]
        )
        seps = st.sampled_from([" ", ", ", "\n", "; ", " | ", "\t", " = "])
        parts = data.draw(
            st.lists(st.one_of(words, st.sampled_from(whole_needles(canaries))), min_size=1, max_size=12)
        )
        text = "".join(p + data.draw(seps) for p in parts)
        assert [] == canaries.leaks(SCANNER.redact(text))


class TestRobustness:
    def test_implements_the_scanner_protocol(self) -> None:
        """SecretScanner is a Scanner."""
        assert isinstance(SCANNER, Scanner)

    @settings(max_examples=200, deadline=None)
    @given(text=st.text(alphabet=st.characters(codec=None), max_size=200))
    def test_never_raises(self, text: str) -> None:
        """Any str, surrogates included, scans and redacts to a str."""
        assert isinstance(SCANNER.redact(text), str)

    def test_redaction_is_idempotent(self, canaries: Canaries) -> None:
        """Redacted text has no findings: masks are never masked again."""
        texts = [f"x {v} y" for v in canaries.values.values()] + [text for _, text, _ in POSITIVES]
        assert [] == [t for t in texts if SCANNER.findings(SCANNER.redact(t))]

    @settings(max_examples=300, deadline=None)
    @given(
        text=st.lists(
            st.sampled_from(
                ["xoxp-ab", "Bearer", "bearer", "eyJ", "AKIA", "-----BEGIN", "sk_", "ghp_", "AIza"]
            )
            | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
            max_size=8,
        ).map(" ".join)
    )
    def test_prefilter_only_skips_clean_text(self, text: str) -> None:
        """Whatever the ASCII prefilter lets pass unscanned, a full scan finds nothing in either."""
        if not _triggered(text):
            assert [] == SCANNER._scan(text)

    def test_findings_are_within_the_text(self) -> None:
        """Every finding is a non-empty span inside the text."""
        text = "a@b.org 4111111111111111 password=x 203.0.113.9 Zoë"
        assert all(0 <= f.start < f.end <= len(text) for f in SCANNER.findings(text))

    @pytest.mark.parametrize(
        "text",
        [
            "a" * (8 << 20),
            "1" * (8 << 20),
            "550e8400-e29b-41d4-a716-446655440000-" * 100_000,
            "1::1 " * 500_000,
            "password x1 " * 500_000,
            "-----BEGIN PRIVATE KEY-----" * 100_000,
            "Zoë " * 1_000_000,
            "\ud800" * (4 << 20),
            "4111 " * 300_000,
            "+1" + " (1)1" * 500_000,
            "phone 1 " * 500_000,
            "(12) 3 " * 500_000,
        ],
        ids=[
            "letters",
            "digits",
            "uuids",
            "ipv6",
            "passwords",
            "pem",
            "names",
            "surrogates",
            "card-groups",
            "phone-groups",
            "phone-labels",
            "phone-parens",
        ],
    )
    def test_huge_text_is_bounded(self, text: str) -> None:
        """Huge or adversarial text scans in bounded time; past the cap it is masked wholesale."""
        start = time.perf_counter()
        redacted = SCANNER.redact(text)
        elapsed = time.perf_counter() - start
        assert elapsed < 5.0, f"took {elapsed:.2f}s"
        assert len(redacted) <= (1 << 20) + 64 or redacted.endswith("<TRUNCATED>")

    def test_text_past_the_cap_is_truncated(self) -> None:
        """Beyond max_scan_chars nothing is scanned and nothing goes out."""
        scanner = SecretScanner(max_scan_chars=1 << 16)
        text = "word " * 20_000 + "sk_live_abcdefgh12345678"
        redacted = scanner.redact(text)
        assert (True, False) == (redacted.endswith("<TRUNCATED>"), "sk_live" in redacted)

    def test_cut_does_not_split_a_token(self) -> None:
        """The truncation point moves back to whitespace: no secret's prefix survives."""
        scanner = SecretScanner(max_scan_chars=1 << 16)
        text = "x" * ((1 << 16) - 20) + " abcdefghijklmnopqrstuvwxyz0123456789 tail"
        assert "abcdefghij" not in scanner.redact(text)

    def test_secret_across_chunk_boundary(self) -> None:
        """A secret straddling two scan chunks is still masked."""
        text = "w " * ((1 << 15) - 10) + "sk_live_CHUNKabcdef0123456789 end"
        assert "sk_live_CHUNK" not in SCANNER.redact(text)

    def test_clean_result_is_cached(self) -> None:
        """A clean message is scanned once; the same text then returns no findings from the cache."""
        scanner = SecretScanner()
        text = "request 42 handled in 12 ms"
        assert ([], [], True) == (scanner.findings(text), scanner.findings(text), text in scanner._clean)

    def test_dirty_result_is_not_cached(self) -> None:
        """Text with findings is never remembered."""
        scanner = SecretScanner()
        scanner.findings("mail a@example.org")
        assert {} == scanner._clean


class TestConfiguration:
    def test_extra_patterns(self) -> None:
        """Extra rules mask their whole match under their own entity name."""
        scanner = SecretScanner(extra_patterns={"EMPLOYEE_ID": r"\bEMP-[0-9]{6}\b"})
        assert [Finding("EMPLOYEE_ID", 3, 13)] == scanner.findings("id EMP-123456 ok")

    def test_extra_patterns_bypass_the_prefilter(self) -> None:
        """An extra rule for plain words runs even on text the built-in prefilter calls clean."""
        scanner = SecretScanner(extra_patterns={"PROJECT": r"\bBluebird\b"})
        assert "project <PROJECT> ships" == scanner.redact("project Bluebird ships")

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"extra_patterns": {"lower": "x"}},
            {"extra_patterns": {"BROKEN": "("}},
            {"min_token_len": 4},
            {"entropy_threshold": 0.0},
            {"max_scan_chars": 10},
        ],
    )
    def test_invalid_configuration(self, kwargs: dict[str, object]) -> None:
        """Bad entity names, patterns and bounds are rejected at construction."""
        with pytest.raises(ValueError):
            SecretScanner(**kwargs)  # type: ignore[arg-type]

"""A seeded, labelled corpus of realistic log messages for scanner precision/recall, and its scoring.

Shared by ``tests/processors/test_pii.py`` (a small slice) and ``benchmarks/bench_pii.py`` (all of it).
Messages are built from parts, so every planted value carries its exact span: ``Sample.spans`` holds
``(entity, start, end)`` for each. About 45% of messages carry personal data or a secret; the rest are clean,
most of them hard negatives: order and invoice numbers, tracking numbers, timestamps, durations, version
and build strings, UUIDs, trace ids, commit hashes, ports, 9- and 10-digit ids.

Labelling conventions: a bearer token is labelled without its ``Bearer`` prefix, URL credentials as the
``user:pass`` part or the query value, a password as the value after ``password=``, a PEM key as the whole
block. Bare 9-digit SSNs always sit next to a field name (``ssn``, ``social security``), as they do in
real logs; an unlabelled 9-digit number is an id. Person names are labelled ``PERSON`` (no pattern
scanner finds them; the row shows what NER would add).
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from faker import Faker

__all__ = ["Sample", "Score", "corpus", "score"]

Part = str | tuple[str, str]
_BORN, _START, _END = datetime(1940, 1, 1), datetime(2023, 1, 1), datetime(2025, 6, 30)


@dataclass(frozen=True, slots=True)
class Sample:
    """One log message and the labelled spans in it."""

    text: str
    spans: tuple[tuple[str, int, int], ...]

    @property
    def clean(self) -> bool:
        return not self.spans


def _build(parts: Iterable[Part]) -> Sample:
    out: list[str] = []
    spans: list[tuple[str, int, int]] = []
    pos = 0
    for p in parts:
        if isinstance(p, tuple):
            entity, value = p
            spans.append((entity, pos, pos + len(value)))
            p = value
        out.append(p)
        pos += len(p)
    return Sample("".join(out), tuple(spans))


class _Gen:
    """Value generators over one seeded Faker and one seeded Random."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.f = Faker(["en_US"])
        self.f.seed_instance(seed)
        self.phones = {loc: Faker(loc) for loc in ("en_US", "en_GB", "de_DE", "fr_FR", "en_CA")}
        for i, fk in enumerate(self.phones.values()):
            fk.seed_instance(seed + 1 + i)

    def s(self, alphabet: str, n: int) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def b64url(self, raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    # --- personal data ---
    def email(self) -> str:
        return self.f.email() if self.r.random() < 0.7 else self.f.free_email()

    def phone(self) -> str:
        loc = self.r.choices(list(self.phones), weights=[6, 1, 1, 1, 1])[0]
        return str(self.phones[loc].phone_number())

    def card(self) -> str:
        num = str(
            self.f.credit_card_number(card_type=self.r.choice(["visa16", "mastercard", "amex", "discover"]))
        )
        if self.r.random() < 0.3 and len(num) == 16:
            sep = self.r.choice([" ", "-"])
            num = sep.join(num[i : i + 4] for i in range(0, 16, 4))
        return num

    def ssn(self, *, dashed: bool = True) -> str:
        s = str(self.f.ssn())
        return s if dashed else s.replace("-", "")

    def iban(self) -> str:
        iban = str(self.phones[self.r.choice(["en_GB", "de_DE", "fr_FR"])].iban())
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if self.r.random() < 0.3 else iban

    def ip(self) -> str:
        return str(self.f.ipv4_public()) if self.r.random() < 0.8 else str(self.f.ipv6())

    def name(self) -> str:
        return str(self.f.name())

    # --- secrets ---
    def jwt(self) -> str:
        header = self.b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = self.b64url(json.dumps({"sub": str(self.r.randint(1, 10**6)), "iat": 1700000000}).encode())
        return f"{header}.{payload}.{self.b64url(self.r.randbytes(32))}"

    def aws_access(self) -> str:
        return self.r.choice(["AKIA", "ASIA"]) + self.s(string.ascii_uppercase + string.digits, 16)

    def aws_secret(self) -> str:
        return self.s(string.ascii_letters + string.digits + "/+", 40)

    def api_key(self) -> str:
        kind = self.r.randrange(5)
        alnum = string.ascii_letters + string.digits
        if kind == 0:
            return "ghp_" + self.s(alnum, 36)
        if kind == 1:
            return f"xoxb-{self.r.randint(10**10, 10**11)}-{self.r.randint(10**10, 10**11)}-" + self.s(
                alnum, 24
            )
        if kind == 2:
            return self.r.choice(["sk_live_", "sk_test_", "rk_live_"]) + self.s(alnum, 24)
        if kind == 3:
            return "AIza" + self.s(alnum + "_-", 35)
        return "github_pat_" + self.s(alnum + "_", 60)

    def token(self) -> str:
        return self.s(string.ascii_letters + string.digits + "-_", self.r.randint(24, 40))

    def password(self) -> str:
        return str(self.f.password(length=self.r.randint(10, 16), special_chars=self.r.random() < 0.5))

    def pem(self) -> str:
        body = "\n".join(base64.b64encode(self.r.randbytes(48)).decode() for _ in range(self.r.randint(3, 6)))
        return f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----"

    # --- hard negatives ---
    def order(self) -> str:
        return self.r.choice(
            [
                f"ORD-{self.r.randint(2019, 2025)}-{self.r.randint(0, 999999):06d}",
                f"#{self.r.randint(10**5, 10**8)}",
                f"INV-{self.r.randint(2019, 2025)}-{self.r.randint(0, 999999):06d}",
                f"PO{self.r.randint(10**6, 10**7)}",
            ]
        )

    def ts(self) -> str:
        when = self.f.date_time_between(start_date=_START, end_date=_END)  # fixed bounds, not relative to now
        return str(when.isoformat(timespec=self.r.choice(["seconds", "milliseconds"])))

    def day(self, start: datetime = _START) -> str:
        return str(self.f.date_between(start_date=start, end_date=_END).isoformat())

    def version(self) -> str:
        v = f"{self.r.randint(0, 12)}.{self.r.randint(0, 30)}.{self.r.randint(0, 40)}"
        return self.r.choice(
            [v, "v" + v, f"{v}-rc{self.r.randint(1, 5)}", f"{v}.{self.r.randint(1000, 99999)}"]
        )

    def uuid(self) -> str:
        return str(self.f.uuid4())

    def hexid(self, n: int) -> str:
        return self.s("0123456789abcdef", n)


def _positive(g: _Gen) -> list[Part]:
    r = g.r
    uid = str(r.randint(1, 10**6))
    t = r.randrange(30)
    if t == 0:
        return ["user ", ("EMAIL_ADDRESS", g.email()), " logged in from ", ("IP_ADDRESS", g.ip())]
    if t == 1:
        return ["sending receipt to ", ("EMAIL_ADDRESS", g.email()), " for order ", g.order()]
    if t == 2:
        return ["password reset requested for ", ("EMAIL_ADDRESS", g.email()), " at ", g.ts()]
    if t == 3:
        return [
            "payment declined card=",
            ("CREDIT_CARD", g.card()),
            f" amount={r.randint(1, 9999)}.{r.randint(0, 99):02d} currency=USD",
        ]
    if t == 4:
        return [
            "stored card ",
            ("CREDIT_CARD", g.card()),
            " for customer ",
            uid,
            f" exp {r.randint(1, 12):02d}/{r.randint(25, 31)}",
        ]
    if t == 5:
        return ["updated profile phone=", ("PHONE_NUMBER", g.phone()), " for user_id=", uid]
    if t == 6:
        return [
            "SMS to ",
            ("PHONE_NUMBER", g.phone()),
            f" failed: carrier timeout after {r.randint(100, 9000)}ms",
        ]
    if t == 7:
        return ["callback requested by ", ("PERSON", g.name()), " on ", ("PHONE_NUMBER", g.phone())]
    if t == 8:
        return ["KYC check: ssn ", ("US_SSN", g.ssn()), " matched for applicant ", uid]
    if t == 9:
        return [
            "tax form received, social security number ",
            ("US_SSN", g.ssn(dashed=r.random() < 0.5)),
            " on file",
        ]
    if t == 10:
        return [
            "wire transfer to IBAN ",
            ("IBAN_CODE", g.iban()),
            f" amount {r.randint(10, 50000)} EUR ref ",
            g.order(),
        ]
    if t == 11:
        return [
            "request from ",
            ("IP_ADDRESS", g.ip()),
            f" GET /api/v1/orders/{r.randint(1, 99999)} 200 {r.randint(1, 900)}ms",
        ]
    if t == 12:
        return [
            "rate limit exceeded for client ",
            ("IP_ADDRESS", g.ip()),
            f" ({r.randint(100, 999)} req/min)",
        ]
    if t == 13:
        user = g.f.user_name()
        return [
            "connecting to postgresql://",
            ("URL_CREDENTIALS", f"{user}:{g.password().replace('@', '')}"),
            f"@db-{r.randint(1, 9)}.internal:5432/app",
        ]
    if t == 14:
        return [
            f"GET https://api.{g.f.domain_name()}/v1/export?token=",
            ("URL_CREDENTIALS", g.token()),
            f"&page={r.randint(1, 50)} -> 200",
        ]
    if t == 15:
        return [
            "outbound call headers: Authorization: Bearer ",
            ("BEARER_TOKEN", g.token()),
            " accept=application/json",
        ]
    if t == 16:
        return ["verifying jwt=", ("JWT", g.jwt()), " for session ", g.uuid()]
    if t == 17:
        return ["loaded aws_access_key_id=", ("AWS_ACCESS_KEY", g.aws_access()), " region=us-east-1"]
    if t == 18:
        return [
            "env AWS_SECRET_ACCESS_KEY=",
            ("AWS_SECRET_KEY", g.aws_secret()),
            " exported for worker ",
            uid,
        ]
    if t == 19:
        return ["using api key ", ("API_KEY", g.api_key()), " for upstream ", g.f.domain_word()]
    if t == 20:
        return [f"login failed for {g.f.user_name()}: password=", ("PASSWORD", g.password())]
    if t == 21:
        return ["loaded signing key ", ("PRIVATE_KEY", g.pem()), " from vault"]
    if t == 22:
        return [
            "new signup ",
            ("PERSON", g.name()),
            " <",
            ("EMAIL_ADDRESS", g.email()),
            "> phone ",
            ("PHONE_NUMBER", g.phone()),
        ]
    if t == 23:
        return ["refund to card ", ("CREDIT_CARD", g.card()), " approved by ", ("PERSON", g.name())]
    if t == 24:
        return [
            f"{g.ts()} WARN auth: token rejected for ",
            ("EMAIL_ADDRESS", g.email()),
            " from ",
            ("IP_ADDRESS", g.ip()),
        ]
    if t == 25:
        return [
            "shipping label for ",
            ("PERSON", g.name()),
            ", ",
            g.f.street_address().replace("\n", " "),
            ", phone ",
            ("PHONE_NUMBER", g.phone()),
        ]
    if t == 26:
        return ["payout account ", ("IBAN_CODE", g.iban()), " verified for merchant ", uid]
    if t == 27:
        return [
            '{"event":"signup","email":"',
            ("EMAIL_ADDRESS", g.email()),
            '","ip":"',
            ("IP_ADDRESS", g.ip()),
            '"}',
        ]
    if t == 28:
        return [
            "applicant ssn=",
            ("US_SSN", g.ssn(dashed=False)),
            f" dob={g.day(_BORN)}",
        ]
    return ["webhook configured with secret: ", ("API_KEY", g.api_key()), f" (attempt {r.randint(1, 5)})"]


def _negative(g: _Gen) -> list[Part]:
    r = g.r
    n = r.randint
    t = r.randrange(22)
    if t == 0:
        return [
            f"order {g.order()} shipped via UPS tracking 1Z{g.s(string.ascii_uppercase + string.digits, 16)}"
        ]
    if t == 1:
        return [f"job {g.uuid()} finished in {n(1, 60000)} ms"]
    if t == 2:
        build = f"{n(2019, 2025)}{n(1, 12):02d}{n(1, 28):02d}.{n(1, 9)}"
        return [f"deployed version {g.version()} (build {build}) to prod"]
    if t == 3:
        return [f"cache hit ratio 0.{n(10, 99)} over {n(10**5, 10**7)} keys"]
    if t == 4:
        return [f"retrying request {n(1, 5)}/5 after {n(50, 2000)}ms"]
    if t == 5:
        return [f"{g.ts()} INFO scheduler: tick {n(1, 10**6)}"]
    if t == 6:
        return [f"invoice {g.order()} total {n(1, 99999)}.{n(0, 99):02d} due {g.day()}"]
    if t == 7:
        return [f"trace_id={g.hexid(32)} span_id={g.hexid(16)} status=OK"]
    if t == 8:
        return [f"checked out commit {g.hexid(40)} on branch main"]
    if t == 9:
        return [f"listening on 0.0.0.0:{r.choice([80, 443, 8000, 8080, 9090])} with {n(1, 32)} workers"]
    if t == 10:
        return [f"processed {n(1, 10**6)} events in {n(1, 99)}.{n(0, 9)}s"]
    if t == 11:
        return [f"user_id={n(10**8, 10**9 - 1)} opened dashboard {g.f.word()}"]
    if t == 12:
        return [f"account {n(10**9, 10**10 - 1)} synced {n(1, 500)} records"]
    if t == 13:
        return [f"GET /api/v2/orders/{n(1, 10**7)}/items?page={n(1, 9)}&sort=desc 200 {n(1, 300)}ms"]
    if t == 14:
        return [f"agent {g.f.word()} version {n(1, 10)}.{n(0, 9)}.{n(0, 9)}.{n(100, 9999)} registered"]
    if t == 15:
        return [
            f"request_id={g.uuid()} method=POST path=/v1/charges status={r.choice([200, 201, 400, 402, 500])}"
        ]
    if t == 16:
        return [
            f"batch {n(2019, 2025)}-{n(1, 12):02d}-{n(1, 28):02d}/{n(1, 999):03d} imported {n(1, 9999)} rows"
        ]
    if t == 17:
        return [f"memory usage {n(100, 4000)} MiB, gc pause {n(1, 200)} ms, heap {n(10**6, 10**9)} bytes"]
    if t == 18:
        return [str(g.f.sentence(nb_words=n(5, 12)))]
    if t == 19:
        sku = f"{g.s(string.ascii_uppercase, 3)}-{n(1000, 99999)}"
        return [f"sku {sku} restocked, {n(1, 500)} units, lot {n(10**6, 10**8)}"]
    if t == 20:
        return [f"feature flag {g.f.word()}_{g.f.word()} enabled for {n(1, 100)}% of tenants"]
    return [f"timeout after {n(1, 30)}s waiting for lock {g.hexid(12)}, retry at {g.ts()}"]


def corpus(n: int = 6000, *, seed: int = 20240607, positive_share: float = 0.45) -> list[Sample]:
    """``n`` labelled log messages, deterministic for a given ``seed``."""
    g = _Gen(seed)
    return [_build(_positive(g) if g.r.random() < positive_share else _negative(g)) for _ in range(n)]


@dataclass(slots=True)
class Score:
    """Per-entity counts: gold spans found / missed, predictions right / wrong (type-exact, by overlap)."""

    found: dict[str, int] = field(default_factory=dict)
    gold: dict[str, int] = field(default_factory=dict)
    right: dict[str, int] = field(default_factory=dict)
    predicted: dict[str, int] = field(default_factory=dict)

    def recall(self, entity: str) -> float | None:
        g = self.gold.get(entity, 0)
        return self.found.get(entity, 0) / g if g else None

    def precision(self, entity: str) -> float | None:
        p = self.predicted.get(entity, 0)
        return self.right.get(entity, 0) / p if p else None


ANY = "(any, masking)"


def score(samples: Sequence[Sample], findings: Callable[[str], Iterable[tuple[str, int, int]]]) -> Score:
    """Score a scanner. ``findings(text)`` yields ``(entity, start, end)``.

    A gold span is found when a prediction of the same entity overlaps it; a prediction is right when it
    overlaps a gold span of its entity. The ``ANY`` row ignores entity names: what reaches a sink unmasked.
    """
    sc = Score()

    def inc(d: dict[str, int], k: str) -> None:
        d[k] = d.get(k, 0) + 1

    for s in samples:
        preds = [(e, a, b) for e, a, b in findings(s.text) if b > a]
        for ge, ga, gb in s.spans:
            inc(sc.gold, ge)
            inc(sc.gold, ANY)
            if any(pe == ge and pa < gb and ga < pb for pe, pa, pb in preds):
                inc(sc.found, ge)
            if any(pa < gb and ga < pb for _, pa, pb in preds):
                inc(sc.found, ANY)
        for pe, pa, pb in preds:
            inc(sc.predicted, pe)
            inc(sc.predicted, ANY)
            if any(ge == pe and pa < gb and ga < pb for ge, ga, gb in s.spans):
                inc(sc.right, pe)
            if any(pa < gb and ga < pb for _, ga, gb in s.spans):
                inc(sc.right, ANY)
    return sc

"""configure(): structlog and stdlib logging through the redacting pipeline into the chained journal."""

from __future__ import annotations

import errno
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import auditlog
import store.journal
from auditlog.canaries import load_canaries
from auditlog.policy import loads
from store.exceptions import KeyError_
from store.keys import KeyRing, MasterKey
from tests._support import only_stream, trail_ok, trail_records

CANARIES = load_canaries()
VALUES = list(CANARIES.values.values())

KEY = MasterKey.generate()


def journal_bytes(d: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file())


def records(d: Path) -> list[dict[str, Any]]:
    return [r for r in trail_records(d) if r.get("kind") != "journal.segment_opened"]


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[tuple[auditlog.AuditHandle, Path, io.StringIO]]:
    console = io.StringIO()
    d = tmp_path / "journal"
    handle = auditlog.configure(journal_dir=d, key=KeyRing(KEY), console=console)
    try:
        yield handle, d, console
    finally:
        handle.shutdown()


@dataclass
class Card:
    number: str
    holder: str


class Customer(BaseModel):
    email: str
    note: str


class TestStructlog:
    def test_kwargs_are_shaped_not_valued(
        self, configured: tuple[auditlog.AuditHandle, Path, io.StringIO]
    ) -> None:
        """A nested argument is journaled as its shape."""
        handle, d, _ = configured
        structlog.get_logger("app").info("order.created", order={"id": 7, "email": "ann@example.org"})
        handle.shutdown()
        (rec,) = records(d)
        assert "order.created" == rec["event"]
        assert "app" == rec["logger"]
        assert {"t": "obj"} == {"t": rec["order"]["t"]}
        assert b"ann@example.org" not in journal_bytes(d)
        assert trail_ok(d, KeyRing(KEY))

    def test_correlation_id_from_contextvars(
        self, configured: tuple[auditlog.AuditHandle, Path, io.StringIO]
    ) -> None:
        """A bound correlation id is carried into the record."""
        handle, d, _ = configured
        structlog.contextvars.bind_contextvars(correlation_id="req-123")
        try:
            structlog.get_logger("app").info("x")
        finally:
            structlog.contextvars.clear_contextvars()
        handle.shutdown()
        assert "req-123" == records(d)[0]["correlation_id"]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        value=st.sampled_from(VALUES),
        where=st.sampled_from(
            ["kwarg", "nested", "key", "list", "bytes", "tuple", "set", "dc", "model", "msg"]
        ),
    )
    def test_no_canary_reaches_journal_or_console(
        self, tmp_path_factory: pytest.TempPathFactory, value: str, where: str
    ) -> None:
        """Wherever a caller puts a secret, neither the journal nor the console holds it."""
        d = tmp_path_factory.mktemp("j")
        console = io.StringIO()
        handle = auditlog.configure(journal_dir=d, key=KeyRing(KEY), console=console)
        log = structlog.get_logger("app")
        args: dict[str, Any] = {
            "kwarg": {"v": value},
            "nested": {"a": {"b": [{"c": value}]}},
            "key": {"m": {value: 1}},
            "list": {"l": [1, value]},
            "bytes": {"b": value.encode()},
            "tuple": {"t": (value,)},
            "set": {"s": {value}},
            "dc": {"card": Card(value, value)},
            "model": {"c": Customer(email=value, note=value)},
            "msg": {},
        }[where]
        log.info(f"event with {value}" if where == "msg" else "event", **args)
        handle.shutdown()
        assert [] == CANARIES.leaks_in(journal_bytes(d) + console.getvalue().encode("utf-8", "surrogatepass"))
        assert 1 == handle.stats.written

    def test_exception_with_chained_cause_keeps_no_secret(
        self, configured: tuple[auditlog.AuditHandle, Path, io.StringIO]
    ) -> None:
        """log.exception journals type and frames; messages are scanned, locals never read."""
        handle, d, console = configured
        secret_local = CANARIES.values["password"]  # noqa: F841 - must not appear via locals
        try:
            try:
                raise KeyError(CANARIES.values["aws_secret_access_key"])
            except KeyError as inner:
                raise RuntimeError(
                    f"token {CANARIES.values['jwt']} for {CANARIES.values['email']}"
                ) from inner
        except RuntimeError:
            structlog.get_logger("app").exception("upstream.failed")
        handle.shutdown()
        (rec,) = records(d)
        assert "builtins.RuntimeError" == rec["exception"]["type"] or rec["exception"]["type"].endswith(
            "RuntimeError"
        )
        assert [] == CANARIES.leaks_in(journal_bytes(d) + console.getvalue().encode())


class TestStdlib:
    def test_template_and_args_shaped_and_extra_shaped(
        self, configured: tuple[auditlog.AuditHandle, Path, io.StringIO]
    ) -> None:
        """The %-template is journaled, arguments and extra= fields only as shapes."""
        handle, d, _ = configured
        logging.getLogger("legacy").warning(
            "login failed for %s from %s",
            CANARIES.values["email"],
            CANARIES.values["ipv4"],
            extra={"password": CANARIES.values["password"], "attempt": 3},
        )
        handle.shutdown()
        (rec,) = records(d)
        assert ("login failed for %s from %s", "legacy", "warning") == (
            rec["event"],
            rec["logger"],
            rec["level"],
        )
        assert {"t": "int"} == rec["attempt"]
        assert "password" in rec
        assert [] == CANARIES.leaks_in(journal_bytes(d))

    def test_bad_format_args_neither_raise_nor_print(
        self, configured: tuple[auditlog.AuditHandle, Path, io.StringIO], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Mismatched %-arguments are never interpolated, so nothing fails and nothing prints."""
        handle, d, _ = configured
        logging.getLogger("legacy").error("%d items", CANARIES.values["api_key"])
        handle.shutdown()
        assert 1 == len(records(d))
        captured = capsys.readouterr()
        assert [] == CANARIES.leaks_in((captured.out + captured.err).encode())

    def test_uvicorn_access_line_is_structured_and_redacted(self, tmp_path: Path) -> None:
        """Access lines keep method, route literals, query keys and status; no client address, no query
        values, no path segment that no route names (``zqcarol``)."""
        d = tmp_path / "journal"
        policy = loads('[paths]\nliterals = ["v1", "users", "reset"]\n')
        handle = auditlog.configure(journal_dir=d, key=KeyRing(KEY), console=io.StringIO(), policy=policy)
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d',
            (CANARIES.values["ipv4"], 5000),
            "GET",
            "/v1/users/42/reset/" + CANARIES.values["jwt"] + "/zqcarol?token=canary-url-token-55&page=2",
            "1.1",
            200,
        )
        handle.shutdown()
        (rec,) = records(d)
        assert ("http.access", "GET", "/v1/users/{n}/reset/{token}/{id}?token=&page=", 200) == (
            rec["event"],
            rec["method"],
            rec["target"],
            rec["status"],
        )
        assert [] == CANARIES.leaks_in(journal_bytes(d))
        assert b"zqcarol" not in journal_bytes(d)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=st.sampled_from(VALUES), where=st.sampled_from(["arg", "extra", "msg", "exc", "extra_key"]))
    def test_no_canary_through_stdlib(
        self, tmp_path_factory: pytest.TempPathFactory, value: str, where: str
    ) -> None:
        """Secrets in stdlib arguments, extra=, messages and exceptions never reach a sink."""
        d = tmp_path_factory.mktemp("j")
        console = io.StringIO()
        handle = auditlog.configure(journal_dir=d, key=KeyRing(KEY), console=console)
        lg = logging.getLogger("legacy.app")
        if where == "arg":
            lg.info("value %s", value)
        elif where == "extra":
            lg.info("value", extra={"field": {"nested": value}})
        elif where == "extra_key":
            lg.info("value", extra={"field": {value: 1}})
        elif where == "msg":
            lg.info(f"value {value}")
        else:
            try:
                raise ValueError(value)
            except ValueError:
                lg.exception("failed")
        handle.shutdown()
        assert [] == CANARIES.leaks_in(journal_bytes(d) + console.getvalue().encode("utf-8", "surrogatepass"))


class TestPolicy:
    POLICY = """
[[rules]]
id = "pay"
match = { logger = "shop.payments" }
level = "values"
allow = ["amount", "note"]
fingerprint = ["email"]

[[rules]]
id = "quiet"
match = { logger = "shop.debug" }
level = "none"

[[rules]]
id = "meta"
match = { logger = "shop.meta" }
level = "metadata"
"""

    def test_levels_allow_and_fingerprint(self, tmp_path: Path) -> None:
        """values keeps scanned allowlisted fields; none drops; metadata drops fields; fp replaces values."""
        d = tmp_path / "j"
        handle = auditlog.configure(journal_dir=d, key=KeyRing(KEY), policy=loads(self.POLICY))
        email = CANARIES.values["email"]
        structlog.get_logger("shop.payments").info(
            "paid", amount=12.5, note=f"from {email}", email=email, other="x"
        )
        structlog.get_logger("shop.debug").info("dump", everything=VALUES)
        structlog.get_logger("shop.meta").info("ping", payload="x")
        fp = handle.fingerprinter.fingerprint(email)
        handle.shutdown()
        paid, ping = records(d)
        assert (12.5, "from <EMAIL_ADDRESS>", {"email": fp}) == (paid["amount"], paid["note"], paid["fp"])
        assert {"t": "str", "len": 1} == paid["other"]
        assert "payload" not in ping
        assert [] == CANARIES.leaks_in(journal_bytes(d))


class TestHandle:
    def test_configure_twice_closes_the_first(self, tmp_path: Path) -> None:
        """A second configure seals the first journal and writes to the new one."""
        a, b = tmp_path / "a", tmp_path / "b"
        h1 = auditlog.configure(journal_dir=a, key=KeyRing(KEY))
        structlog.get_logger().info("one")
        h2 = auditlog.configure(journal_dir=b, key=KeyRing(KEY))
        structlog.get_logger().info("two")
        h2.shutdown()
        h1.shutdown()
        assert (["one"], ["two"]) == ([r["event"] for r in records(a)], [r["event"] for r in records(b)])
        assert trail_ok(a, KeyRing(KEY)) and trail_ok(b, KeyRing(KEY))

    def test_missing_key_is_a_clear_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a key anywhere, configure says how to make one."""
        monkeypatch.delenv("AUDITLOG_KEY", raising=False)
        monkeypatch.delenv("AUDITLOG_KEY_FILE", raising=False)
        with pytest.raises(KeyError_, match="auditlog keygen"):
            auditlog.configure(journal_dir=tmp_path)

    def test_key_from_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """AUDITLOG_KEY is used when no key is passed."""
        monkeypatch.setenv("AUDITLOG_KEY", KEY.to_b64())
        h = auditlog.configure(journal_dir=tmp_path / "j")
        assert KEY.key_id == h.keys.active.key_id
        h.shutdown()

    def test_journal_failure_is_counted_not_raised(
        self,
        configured: tuple[auditlog.AuditHandle, Path, io.StringIO],
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """When the journal cannot take an event, the app continues; the drop is counted and reported once."""
        handle, _, _ = configured

        def disk_full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(store.journal, "_write", disk_full)
        for _ in range(3):
            structlog.get_logger().info("x", secret=CANARIES.values["password"])
        assert not handle.emit({"kind": "test"})
        assert 4 == handle.stats.dropped
        err = capsys.readouterr().err
        assert 1 == err.count("audit event not written")
        assert [] == CANARIES.leaks_in(err.encode())

    def test_emit_stamps_trusted_events(
        self, configured: tuple[auditlog.AuditHandle, Path, io.StringIO]
    ) -> None:
        """emit() adds ts, event_id and the policy reference."""
        handle, d, _ = configured
        assert handle.emit({"kind": "http.request", "outcome": {"status": "ok"}})
        handle.shutdown()
        (rec,) = records(d)
        assert {"kind", "outcome", "ts", "event_id", "policy"} <= set(rec)
        assert "default" == rec["policy"]["id"]

    def test_emit_copies_unless_the_event_is_handed_over(
        self, configured: tuple[auditlog.AuditHandle, Path, io.StringIO]
    ) -> None:
        """By default the journal takes a copy (the caller's dict gets ts and event_id only, and can be
        emitted again); ``owned=True`` journals the dict itself, seq included."""
        import collections

        handle, d, _ = configured
        mine: dict[str, object] = {"kind": "http.request"}
        other = collections.UserDict({"kind": "mcp.tool_call"})
        given: dict[str, object] = {"kind": "authz.denied"}
        assert handle.emit(mine) and handle.emit(other) and handle.emit(given, owned=True)
        assert "seq" not in mine and "seq" not in other and {"ts", "event_id", "policy"} <= set(mine)
        assert '"id"' in orjson.dumps(mine).decode()  # still plain JSON-ready data
        del mine["event_id"]
        assert handle.emit(mine)  # the same dict again: a second event
        handle.shutdown()
        first, second, third, fourth = records(d)
        seqs = [r["seq"] for r in (first, second, third, fourth)]
        assert seqs == list(range(seqs[0], seqs[0] + 4))  # after the segment header
        assert given["seq"] == third["seq"] and given["event_id"] == third["event_id"]
        assert ("http.request", "mcp.tool_call", "authz.denied", "http.request") == tuple(
            r["kind"] for r in (first, second, third, fourth)
        )
        assert third["policy"] == first["policy"]

    def test_records_serialize_as_json_lines(
        self, configured: tuple[auditlog.AuditHandle, Path, io.StringIO]
    ) -> None:
        """Every journal line is one JSON object."""
        handle, d, _ = configured
        structlog.get_logger().info("x", a=1)
        handle.shutdown()
        for p in only_stream(d).glob("*.jsonl"):
            for line in p.read_bytes().splitlines():
                assert isinstance(orjson.loads(line), dict)


class TestExclusive:
    def test_foreign_root_handler_detached_and_restored(self, tmp_path: Path) -> None:
        """A basicConfig-style console handler prints nothing while configured and returns afterwards."""
        stream = io.StringIO()
        foreign = logging.StreamHandler(stream)
        root = logging.getLogger()
        root.addHandler(foreign)
        try:
            handle = auditlog.configure(journal_dir=tmp_path / "j", key=KeyRing(KEY))
            logging.getLogger("host").warning("token %s", CANARIES.values["api_key"])
            handle.shutdown()
            assert "" == stream.getvalue()
            assert foreign in root.handlers
        finally:
            root.removeHandler(foreign)
        assert 1 == len(records(tmp_path / "j"))


class Exploding:
    """A value whose every dunder raises, and a processor bug, must cost one event, never the caller."""

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError("boom")


class TestGuard:
    def test_a_failing_processor_drops_one_event_and_never_raises(
        self, configured: tuple[auditlog.AuditHandle, Path, io.StringIO]
    ) -> None:
        """A processor that raises costs one counted event; the caller sees nothing."""
        handle, _, _ = configured

        def broken(logger: Any, name: str, ed: Any) -> Any:
            raise RuntimeError(CANARIES.values["password"])

        guard = structlog.get_config()["processors"][0]
        guard._chain = (broken, *guard._chain)
        structlog.get_logger("app").info("x")
        logging.getLogger("app").info("y")
        assert 1 <= handle.stats.dropped
        assert {"processor:RuntimeError"} <= set(handle.stats.drop_reasons)

    def test_caller_fp_argument_does_not_break_fingerprinting(self, tmp_path: Path) -> None:
        """A caller passing its own `fp=` still gets the rule's fingerprints, and no crash."""
        pol = loads("[[rules]]\nmatch = { logger = 'pay' }\nfingerprint = ['email']\n")
        handle = auditlog.configure(journal_dir=tmp_path / "j", key=KeyRing(KEY), policy=pol)
        structlog.get_logger("pay").info("x", email="a@b.org", fp="not-a-dict")
        structlog.get_logger("pay").info("y", obj=Exploding())
        handle.shutdown()
        x, y = records(tmp_path / "j")
        assert handle.fingerprinter.fingerprint("a@b.org") == x["fp"]["email"]
        assert y["obj"].startswith("<unshapeable:")


class TestPiiAnnotation:
    def test_rule_pii_fields_carry_entity_types_not_values(self, tmp_path: Path) -> None:
        """A field named in a rule's `pii` list is shaped and annotated with what it carried."""
        pol = loads("[[rules]]\nmatch = { logger = 'support' }\npii = ['comment']\n")
        handle = auditlog.configure(journal_dir=tmp_path / "j", key=KeyRing(KEY), policy=pol)
        comment = f"please mail {CANARIES.values['email']}"
        structlog.get_logger("support").info("ticket", comment=comment, other=comment)
        handle.shutdown()
        (rec,) = records(tmp_path / "j")
        assert {"t": "str", "len": len(comment), "pii": ["EMAIL_ADDRESS"]} == rec["comment"]
        assert "pii" not in rec["other"]
        assert [] == CANARIES.leaks_in(journal_bytes(tmp_path / "j"))


class TestEventStamper:
    """The fused first processor gives what the processors it stands for give, one after another."""

    POLICY = TestPolicy.POLICY

    @staticmethod
    def separate(handle: auditlog.AuditHandle) -> list[Any]:
        from auditlog.pipeline import add_logger_name_and_timestamp
        from processors import add_correlation_ids

        exceptions, fingerprints = handle.processors[0]._exceptions, handle.processors[0]._fingerprints
        return [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_logger_name_and_timestamp,
            add_correlation_ids,
            exceptions,
            fingerprints,
        ]

    @pytest.mark.parametrize("method", ["info", "warn", "exception", "debug"])
    @pytest.mark.parametrize(
        ("logger_name", "bound", "event"),
        [
            ("svc", {}, {"event": "plain", "n": 1}),
            ("svc", {"correlation_id": "abc-1", "user": "u"}, {"event": "bound", "user": "mine"}),
            ("svc", {"correlation_id": "bad id!"}, {"event": "invalid id"}),
            ("svc", {}, {"event": "own id", "correlation_id": "x" * 129}),
            ("shop.payments", {}, {"event": "paid", "email": "ann@example.org", "amount": 3}),
            ("shop.payments", {}, {"event": "caller fp", "email": "a@b.example", "fp": {"x": 1}}),
            (None, {}, {"event": "named", "logger": "given.name", "level": "caller's"}),
        ],
    )
    def test_same_event_as_the_separate_processors(
        self,
        tmp_path: Path,
        method: str,
        logger_name: str | None,
        bound: dict[str, Any],
        event: dict[str, Any],
    ) -> None:
        """Context merge, level, logger name, correlation ids, exceptions and fingerprints all agree; the
        caller's reserved keys are set aside first (CallerReserved shapes them)."""
        from auditlog.pipeline import _STASH, CALLER_RESERVED

        caller = {k: v for k, v in event.items() if k in CALLER_RESERVED}
        plain = {k: v for k, v in event.items() if k not in CALLER_RESERVED}
        handle = auditlog.configure(
            journal_dir=tmp_path / "j", key=KeyRing(KEY), policy=loads(self.POLICY), stdlib=False
        )
        try:
            stamper = handle.processors[0]
            logger = structlog.get_logger(logger_name)._logger if logger_name else None
            try:
                raise ValueError("boom")
            except ValueError:
                extra = {"exc_info": True} if method == "exception" else {}
                with structlog.contextvars.bound_contextvars(**bound):
                    fused = stamper(logger, method, {**event, **extra})
                    one_by_one: Any = {**plain, **extra}
                    for proc in self.separate(handle):
                        one_by_one = proc(logger, method, one_by_one)
        finally:
            handle.shutdown()
        assert fused.pop("timestamp")[:19] == one_by_one.pop("timestamp")[:19]
        assert caller == fused.pop(_STASH, {})
        assert one_by_one == fused


class TestReservedValues:
    def test_ints_past_64_bits_are_shaped_not_lost(self, tmp_path: Path) -> None:
        """A reserved key holding an int orjson cannot write is shaped, and the event is journaled."""
        d = tmp_path / "j"
        handle = auditlog.configure(journal_dir=d, key=KeyRing(KEY), stdlib=False)
        structlog.get_logger("svc").info("big", dropped_fields=2**70, hidden_keys=-1, policy={"v": -(2**64)})
        stats = handle.stats.as_dict()
        handle.shutdown()
        (event,) = records(d)
        assert (1, 0) == (stats["written"], stats["dropped"])
        shaped = [event["dropped_fields"], event["hidden_keys"], event["policy"]["keys"]["v"]]
        assert [{"t": "int"}] * 3 == shaped


class Hostile:
    """An object whose every reading raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __len__(self) -> int:
        raise RuntimeError("len")


class TestPathologicalThroughConfigure:
    def test_hostile_values_are_journaled_bounded_and_never_raise(self, tmp_path: Path) -> None:
        """configure()'s rendered shapes: deep, wide, cyclic, binary and hostile values; every event lands."""
        deep_dict: Any = {"leaf": 1}
        deep_list: Any = [1]
        for _ in range(10_000):
            deep_dict, deep_list = {"k": deep_dict}, [deep_list]
        cyclic: dict[str, Any] = {"a": [1, 2]}
        cyclic["self"] = cyclic
        cyclic["a"].append(cyclic)
        wide = {f"k{i}": i for i in range(10**6)}
        secret = CANARIES.values["api_key"]
        values = {
            "deep_dict": deep_dict,
            "deep_list": deep_list,
            "cyclic": cyclic,
            "wide": wide,
            "bytes": b"\xff\xfe" + secret.encode(),
            "surrogate_value": "\ud800" + secret,
            "surrogate_key": {"\udcff" + secret: 1, "ok": [secret]},
            "hostile": Hostile(),
            "hostile_nested": {"x": [Hostile(), {"y": Hostile()}]},
            "sets": {"s": {secret, "b"}, "f": frozenset({1})},
        }
        d = tmp_path / "j"
        handle = auditlog.configure(journal_dir=d, key=KeyRing(KEY), stdlib=False)
        log = structlog.get_logger("svc")
        for name, value in values.items():
            log.info("hostile", **{name: value})
        stats = handle.stats.as_dict()
        handle.shutdown()
        got = records(d)
        assert (len(values), 0) == (stats["written"], stats["dropped"])
        assert [next(iter(values.keys() & r.keys())) for r in got] == list(values)
        assert [] == CANARIES.leaks_in(journal_bytes(d))
        assert trail_ok(d, KeyRing(KEY))
        assert {"t": "obj", "n": 10**6, "truncated": True} == {
            k: got[3]["wide"][k] for k in ("t", "n", "truncated")
        }


# Values without a marker (the second canary corpus): each has the form of some reserved value.
FORM_VALUES: dict[str, Any] = {
    "session_hex": "9f3c2a7be41d08c6f5a9e27d4b1c3e80",  # a correlation id's and a trace id's form
    "span_hex": "9f3c2a7be41d08c6",  # a span id's form
    "card": 4111111111111111,  # a count's form
    "word": "correcthorsebattery",  # a logger name's and a kind's form
}
WRITTEN_KEYS = sorted(
    {"correlation_id", "trace_id", "span_id", "level", "logger", "timestamp", "kind", "fp", "exception"}
    | {"hidden_keys", "dropped_fields", "policy", "seq", "mac", "ts", "event_id", "v", "stream", "source"}
)


class TestCallerReservedKeys:
    @pytest.mark.parametrize("key", WRITTEN_KEYS)
    def test_caller_values_under_written_keys_are_shaped(self, tmp_path: Path, key: str) -> None:
        """Any key the pipeline writes, passed by a caller (kwargs, bound logger, contextvars, stdlib
        extra) with a value of the right form, is shaped: the value never reaches the journal."""
        d = tmp_path / "j"
        handle = auditlog.configure(journal_dir=d, key=KeyRing(KEY), stdlib=True, exclusive=True)
        log = structlog.get_logger("svc")
        try:
            for value in [
                *FORM_VALUES.values(),
                {"id": FORM_VALUES["session_hex"], "n": FORM_VALUES["card"]},
            ]:
                log.info("kw", **{key: value})
                log.bind(**{key: value}).info("bound")
                logging.getLogger("app").warning("extra", extra={key: value})
                if key not in ("correlation_id", "span_id", "trace_id"):  # those: bind_correlation_id's
                    with structlog.contextvars.bound_contextvars(**{key: value}):
                        log.info("contextvars")
            stats = handle.stats.as_dict()
        finally:
            handle.shutdown()
        blob = journal_bytes(d)
        found = [n for n, v in FORM_VALUES.items() if str(v).encode() in blob]
        assert [] == found
        assert 0 == stats["dropped"]

    def test_the_pipelines_own_ids_stay(self, tmp_path: Path) -> None:
        """A correlation id bound by the middleware (contextvars) is journaled as it is."""
        d = tmp_path / "j"
        handle = auditlog.configure(journal_dir=d, key=KeyRing(KEY), stdlib=False)
        with structlog.contextvars.bound_contextvars(correlation_id="4bf92f3577b34da6a3ce929d0e0e4736"):
            structlog.get_logger("svc").info("in request", correlation_id="4bf92f3577b34da6a3ce929d0e0e4736")
        handle.shutdown()
        (event,) = records(d)
        assert ("4bf92f3577b34da6a3ce929d0e0e4736", "svc", "info") == (
            event["correlation_id"],
            event["logger"],
            event["level"],
        )


class TestNeverRaises:
    def test_positional_formatting_never_raises(self, tmp_path: Path) -> None:
        """Arguments that cannot be interpolated (deep, huge int, hostile __str__): the template is the
        message, the arguments are shaped, the event is journaled and the problem counted."""
        deep: Any = [1]
        for _ in range(10_000):
            deep = [deep]
        d = tmp_path / "j"
        handle = auditlog.configure(journal_dir=d, key=KeyRing(KEY), stdlib=False)
        log = structlog.get_logger("svc")
        for arg in (deep, 10**5000, Hostile()):
            log.info("p %s", arg)
        log.info("two %s %s", 1)  # a mismatch raises too
        stats = handle.stats.as_dict()
        handle.shutdown()
        got = records(d)
        assert (4, 0) == (stats["written"], stats["dropped"])
        assert ["p %s", "p %s", "p %s", "two %s %s"] == [r["event"] for r in got]
        assert 4 == sum(n for k, n in stats["repaired"].items() if k.startswith("format:"))

    def test_lone_surrogates_are_replaced_not_dropped(self, tmp_path: Path) -> None:
        """A lone surrogate in a message or an allowlisted value is replaced (U+FFFD); the event is
        journaled, the secret next to it still redacted."""
        secret = CANARIES.values["api_key"]
        pol = loads("[[rules]]\nmatch = { logger = 'svc' }\nlevel = 'values'\nallow = ['note']\n")
        d = tmp_path / "j"
        console = io.StringIO()
        handle = auditlog.configure(
            journal_dir=d, key=KeyRing(KEY), policy=pol, stdlib=False, console=console
        )
        log = structlog.get_logger("svc")
        log.info("\ud800 message " + secret)
        log.info("value", note="\udfff" + secret)
        log.info("p %s", "\ud800" + secret)
        stats = handle.stats.as_dict()
        handle.shutdown()
        got = records(d)
        assert (3, 0) == (stats["written"], stats["dropped"])
        assert "\ufffd message " == got[0]["event"][: len(" message ") + 1]
        assert "\udfff" not in got[1]["note"] and got[1]["note"].encode()  # the secret beside it: masked
        assert [] == CANARIES.leaks_in(journal_bytes(d))
        assert [] == CANARIES.leaks_in(console.getvalue().encode())

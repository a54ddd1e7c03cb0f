"""Witness protocol messages: reports, views, paths, incarnations, signatures.

Round trips of reports and views; every malformed input (bad JSON, extra or
missing fields, wrong types, NaN, oversize bodies, bad names, another
cluster's view) raises Malformed and nothing else; paths are routed and
bad names in them refused; signatures bind method, path and body.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import witness as wp
from cpro.protocols.heartbeat import Incarnation

INC = Incarnation(1_700_000_000_123_456_789, "0123abcd")
KEY = b"cluster-key"


def view_body(**overrides):
    obj = {"protocol": 1, "cluster": "c1", "seq": 7,
           "servers": {"srv2": {"incarnation": str(INC), "age": 1.5, "seq": 3}}}
    obj.update(overrides)
    return json.dumps(obj).encode()


class IncarnationTests(SynchronousTestCase):
    def test_round_trip(self):
        self.assertEqual(wp.parse_incarnation(wp.format_incarnation(INC)), INC)
        self.assertEqual(wp.parse_incarnation(str(INC)), INC)

    def test_empty_nonce(self):
        self.assertEqual(wp.parse_incarnation("5/"), Incarnation(5, ""))

    def test_malformed(self):
        for text in ["", "5", "/abc", "-5/abc", "+5/abc", "5/a/b", "5/a b", "x/abc",
                     "1" * 21 + "/a", str(2**64) + "/a", "5/" + "a" * 65, None, 5, b"5/a"]:
            with self.assertRaises(wp.Malformed, msg=repr(text)):
                wp.parse_incarnation(text)

    def test_format_refuses_unparseable_nonce(self):
        with self.assertRaises(wp.Malformed):
            wp.format_incarnation(Incarnation(5, "a/b"))


class NameAndPathTests(SynchronousTestCase):
    def test_valid_names(self):
        for name in ["c1", "srv_1", "a.b-c", "A" * 63, "_x"]:
            self.assertTrue(wp.valid_name(name), name)
        for name in ["", ".", "..", "-a", ".a", "a/b", "a%2f", "a b", "é", "A" * 64, None, 5]:
            self.assertFalse(wp.valid_name(name), name)

    def test_routes(self):
        self.assertEqual(wp.parse_path(b"/"), wp.Route("root"))
        self.assertEqual(wp.parse_path("/?x=1"), wp.Route("root"))
        self.assertEqual(wp.parse_path(b"/status"), wp.Route("status"))
        self.assertEqual(wp.parse_path(b"/clusters/c1"), wp.Route("cluster", "c1"))
        self.assertEqual(wp.parse_path(b"/clusters/c1/servers/srv1"),
                         wp.Route("report", "c1", "srv1"))

    def test_unknown_paths(self):
        for path in [b"/x", b"/clusters", b"/clusters/c1/", b"/clusters/c1/x/srv1",
                     b"/clusters/c1/servers/srv1/x", b"//clusters/c1", b""]:
            self.assertIsNone(wp.parse_path(path), path)

    def test_bad_names_in_paths(self):
        for path in [b"/clusters/", b"/clusters/..", b"/clusters/a%2fb", b"/clusters/c1/servers/.x",
                     b"/clusters/c1/servers/" + b"s" * 64, "/clusters/é".encode()]:
            with self.assertRaises(wp.Malformed, msg=path):
                wp.parse_path(path)

    def test_paths_built(self):
        self.assertEqual(wp.report_path("c1", "srv1"), "/clusters/c1/servers/srv1")
        self.assertRaises(ValueError, wp.report_path, "c1", "a/b")
        self.assertRaises(ValueError, wp.cluster_path, "..")


class ReportTests(SynchronousTestCase):
    def test_round_trip(self):
        report = wp.Report("c1", "srv1", INC, 42, 1700000000.5)
        path, body = wp.encode_report(report)
        self.assertEqual(path, "/clusters/c1/servers/srv1")
        self.assertLessEqual(len(body), wp.MAX_REPORT)
        self.assertEqual(wp.decode_report("c1", "srv1", body), report)

    def test_malformed(self):
        good = {"incarnation": str(INC), "seq": 1, "time": 5.0}
        bodies = [
            b"", b"{", b"[]", b"null", b"\xff\xfe", b"{}",
            json.dumps(dict(good, extra=1)).encode(),
            json.dumps({k: v for k, v in good.items() if k != "seq"}).encode(),
            json.dumps(dict(good, seq=-1)).encode(),
            json.dumps(dict(good, seq=True)).encode(),
            json.dumps(dict(good, seq=1.5)).encode(),
            json.dumps(dict(good, seq=2**64)).encode(),
            json.dumps(dict(good, incarnation="junk")).encode(),
            json.dumps(dict(good, time="now")).encode(),
            b'{"incarnation":"5/a","seq":1,"time":NaN}',
            b'{"incarnation":"5/a","seq":1,"time":Infinity}',
            b"[" * 100000,
            json.dumps(dict(good, pad="x" * wp.MAX_REPORT)).encode(),
        ]
        for body in bodies:
            with self.assertRaises(wp.Malformed, msg=body[:60]):
                wp.decode_report("c1", "srv1", body)

    def test_bad_names(self):
        _, body = wp.encode_report(wp.Report("c1", "srv1", INC, 1))
        self.assertRaises(wp.Malformed, wp.decode_report, "..", "srv1", body)
        self.assertRaises(wp.Malformed, wp.decode_report, "c1", "a/b", body)


class ViewTests(SynchronousTestCase):
    def test_round_trip(self):
        view = wp.View("c1", {"srv1": wp.Sighting("srv1", INC, 0.25, 9),
                              "srv2": wp.Sighting("srv2", Incarnation(1, "x"), 30.0, 2)}, seq=9)
        self.assertEqual(wp.decode_view(wp.encode_view(view), "c1"), view)

    def test_get_view_has_no_seq(self):
        self.assertIsNone(wp.decode_view(wp.encode_view(wp.View("c1")), "c1").seq)

    def test_ages_rounded_and_never_negative(self):
        body = wp.encode_view(wp.View("c1", {"s": wp.Sighting("s", INC, -0.5, 1)}))
        self.assertEqual(wp.decode_view(body, "c1").servers["s"].age, 0.0)

    def test_other_cluster(self):
        with self.assertRaises(wp.Malformed):
            wp.decode_view(view_body(cluster="c2"), "c1")

    def test_malformed(self):
        sighting = {"incarnation": str(INC), "age": 1.5, "seq": 3}
        bodies = [
            b"", b"[]", b"{}", view_body(protocol=2), view_body(seq="x"), view_body(seq=-1),
            view_body(servers=[]), view_body(servers={"../x": sighting}),
            view_body(servers={"s": dict(sighting, age=-1)}),
            view_body(servers={"s": dict(sighting, age="old")}),
            view_body(servers={"s": dict(sighting, age=1e12)}),
            view_body(servers={"s": dict(sighting, incarnation="nope")}),
            view_body(servers={"s": dict(sighting, extra=1)}),
            view_body(servers={"s": 5}),
            view_body(servers={f"s{i}": sighting for i in range(wp.MAX_SERVERS + 1)}),
            view_body(extra=1),
            b"{" + b" " * wp.MAX_VIEW + b"}",
        ]
        for body in bodies:
            with self.assertRaises(wp.Malformed, msg=body[:80]):
                wp.decode_view(body, "c1")

    def test_refusal(self):
        self.assertEqual(wp.decode_refusal(b'{"error": "no", "seq": 5}'), ("no", 5))
        self.assertEqual(wp.decode_refusal(b'{"error": "no"}'), ("no", None))
        self.assertEqual(wp.decode_refusal(b'{"error": 5, "seq": -1}'), ("(no explanation)", None))
        self.assertEqual(wp.decode_refusal(b"<html>"), ("(no explanation)", None))
        self.assertEqual(wp.decode_refusal(b"[1]"), ("(no explanation)", None))


class SignatureTests(SynchronousTestCase):
    def test_request_signature_binds_method_path_body(self):
        message = wp.request_message(b"POST", "/clusters/c1/servers/s", b"{}")
        signature = wp.sign(KEY, message)
        wp.verify(KEY, message, signature)
        wp.verify(KEY, message, signature.upper().encode())
        for other in [wp.request_message(b"GET", "/clusters/c1/servers/s", b"{}"),
                      wp.request_message(b"POST", "/clusters/c2/servers/s", b"{}"),
                      wp.request_message(b"POST", "/clusters/c1/servers/s", b"{ }")]:
            self.assertRaises(wp.BadSignature, wp.verify, KEY, other, signature)
        self.assertRaises(wp.BadSignature, wp.verify, b"other", message, signature)

    def test_missing_signature(self):
        message = wp.answer_message("/x", b"{}")
        for signature in [None, "", b""]:
            self.assertRaises(wp.BadSignature, wp.verify, KEY, message, signature)

    def test_answer_and_request_messages_differ(self):
        self.assertNotEqual(wp.sign(KEY, wp.request_message(b"GET", "/x", b"")),
                            wp.sign(KEY, wp.answer_message("/x", b"")))

    def test_empty_key_refused(self):
        self.assertRaises(ValueError, wp.sign, b"", b"x")


class HostileInputTests(SynchronousTestCase):
    """Issue 10: values an attacker can send raise the protocol's own errors only."""

    good_report = {"incarnation": str(INC), "seq": 1, "time": 5.0}
    sighting = {"incarnation": str(INC), "age": 1.5, "seq": 3}

    def test_huge_integer_time(self):
        # math.isfinite() on an int past a float's range raised OverflowError.
        for value in (10**400, -(10**400), 2**1100):
            body = json.dumps(dict(self.good_report, time=value)).encode()
            with self.assertRaises(wp.Malformed, msg=str(value)[:20]):
                wp.decode_report("c1", "srv1", body)

    def test_integer_time_in_range(self):
        body = json.dumps(dict(self.good_report, time=1700000000)).encode()
        self.assertEqual(wp.decode_report("c1", "srv1", body).time, 1700000000.0)

    def test_huge_integer_age(self):
        for value in (10**400, 2**1100):
            with self.assertRaises(wp.Malformed):
                wp.decode_view(view_body(servers={"s": dict(self.sighting, age=value)}), "c1")

    def test_protocol_must_be_the_integer(self):
        for value in (True, 1.0, "1"):
            with self.assertRaises(wp.Malformed, msg=repr(value)):
                wp.decode_view(view_body(protocol=value), "c1")

    def test_refusal_message_is_one_printable_line(self):
        message, _ = wp.decode_refusal(json.dumps({"error": "a\nb\r\x1b[31m\u202ec"}).encode())
        self.assertTrue(message.isprintable(), repr(message))
        for text in ("x" * 1000, "x" * 199 + "\x7f" * 10, "\n" * 300):
            message, _ = wp.decode_refusal(json.dumps({"error": text}).encode())
            self.assertLessEqual(len(message), 200)
            self.assertTrue(message.isprintable(), repr(message))


class HostileSignatureTests(SynchronousTestCase):
    """Issue 10: any bad signature raises BadSignature, never another error."""

    message = wp.request_message(b"POST", "/clusters/c1/servers/s", b"{}")

    def test_non_ascii_text(self):
        # hmac.compare_digest() raised TypeError on non-ASCII text.
        good = wp.sign(KEY, self.message)
        for signature in ["é" * 64, good[:-1] + "é", "\udcff", "\u202e" + good, "サ"]:
            with self.assertRaises(wp.BadSignature, msg=repr(signature)):
                wp.verify(KEY, self.message, signature)

    def test_non_ascii_bytes(self):
        good = wp.sign(KEY, self.message).encode()
        for signature in [b"\xff\xfe", good[:-1] + b"\xff", "é".encode() * 32, b"\x00" * 64]:
            with self.assertRaises(wp.BadSignature, msg=repr(signature)):
                wp.verify(KEY, self.message, signature)

    def test_odd_types_and_sizes(self):
        good = wp.sign(KEY, self.message)
        for signature in [5, ["a"], object(), good * 100, " " * 64, bytearray(good.encode())]:
            with self.assertRaises(wp.BadSignature, msg=repr(signature)[:40]):
                wp.verify(KEY, self.message, signature)

    def test_good_still_accepted(self):
        good = wp.sign(KEY, self.message)
        wp.verify(KEY, self.message, good)
        wp.verify(KEY, self.message, " " + good.upper() + " ")
        wp.verify(KEY, self.message, good.encode())

"""cpro.protocols.keyring and the codecs reading it."""

from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import alertsync, heartbeat as hb
from cpro.protocols.keyring import Keyring

OLD, NEW = b"old-key", b"new-key"
PACKET = hb.HeartbeatPacket("c", "srv2", hb.Incarnation(1, "n"), 1, hb.StateDigest("d", 0, "Running"))


class KeyringTests(SynchronousTestCase):
    def test_rotation_steps(self):
        ring = Keyring(OLD)
        ring.accept(NEW)
        self.assertEqual((ring.current, ring.accepted), (OLD, (OLD, NEW)))
        ring.switch(NEW)
        self.assertEqual((ring.current, ring.accepted), (NEW, (NEW, OLD)))
        ring.forget(NEW)  # never the signing key
        self.assertEqual(ring.accepted, (NEW, OLD))
        ring.settle()
        self.assertEqual(ring.accepted, (NEW,))

    def test_heartbeats_of_either_key_are_accepted_during_a_rotation(self):
        ring = Keyring(OLD)
        ring.accept(NEW)
        self.assertEqual(hb.decode(hb.encode(PACKET, NEW), ring, "c"), PACKET)
        self.assertEqual(hb.decode(hb.encode(PACKET, OLD), ring, "c"), PACKET)
        self.assertEqual(hb.decode(hb.encode(PACKET, ring), OLD, "c"), PACKET)  # signed with the current key
        ring.switch(NEW)
        ring.settle()
        self.assertRaises(hb.Unauthenticated, hb.decode, hb.encode(PACKET, OLD), ring, "c")

    def test_alerts_of_either_key_are_accepted_during_a_rotation(self):
        alert = alertsync.Alert(time=1.0, server="srv2", module="nm", event_id=1,
                                level=alertsync.Level.INFO, message="m", origin_seq=1)
        ring = Keyring(NEW)
        ring.accept(OLD)
        for key in (OLD, NEW):
            decoded, _ = alertsync.decode_alert(alertsync.encode_alert(alert, "inc", "c", key), "c", ring)
            self.assertEqual(decoded.message, "m")
        self.assertRaises(alertsync.Unauthenticated, alertsync.decode_alert,
                          alertsync.encode_alert(alert, "inc", "c", b"third"), "c", ring)

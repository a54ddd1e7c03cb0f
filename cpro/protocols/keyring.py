"""The cluster keys a server uses: the one it signs with, and the ones it accepts.

Outside a key rotation both are the one cluster key. During a rotation
(clpcfctrl --push of a new key) every server first accepts the new key as
well, then signs with it, and only when every server signs with it drops
the old one: no authenticated message is refused on the way.

The codecs (heartbeat, alert synchronisation, serial frames, the witness
signatures, the internal channel's proofs) take either a key (bytes) or a
L{Keyring}: L{signing_key} and L{accepted_keys} read both.
"""


class Keyring:
    def __init__(self, key):
        _check(key)
        self._current = key
        self._accepted = (key,)

    @property
    def current(self):
        """The key this server signs with."""
        return self._current

    @property
    def accepted(self):
        """The keys whose signatures this server accepts, the signing key first."""
        return self._accepted

    def accept(self, key):
        """Accept key's signatures too (first step of a rotation)."""
        _check(key)
        if key not in self._accepted:
            self._accepted = self._accepted + (key,)

    def switch(self, key):
        """Sign with key from now on, still accepting the others."""
        self.accept(key)
        self._current = key
        self._accepted = (key,) + tuple(k for k in self._accepted if k != key)

    def forget(self, key):
        """Stop accepting key (a rotation that was aborted); never the signing key."""
        if key != self._current:
            self._accepted = tuple(k for k in self._accepted if k != key)

    def settle(self):
        """Accept the signing key only (the rotation is over everywhere)."""
        self._accepted = (self._current,)


def _check(key):
    if not isinstance(key, bytes) or not key:
        raise ValueError("a cluster key must be non-empty bytes")


def signing_key(key):
    return key.current if isinstance(key, Keyring) else key


def accepted_keys(key):
    return key.accepted if isinstance(key, Keyring) else (key,)

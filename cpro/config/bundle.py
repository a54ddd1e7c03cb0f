"""A configuration directory as one value: clp.conf and the files beside it.

What `clpcfctrl --push -x DIR` distributes: clp.conf, the key file, the
scripts tree and anything else under DIR that the configuration refers to.
L{read_bundle} reads a directory (regular files only, bounded in number and
size, no links leaving it); L{install_bundle} writes one into a
configuration directory, each file through a temporary file and a rename,
keeping the previous clp.conf as clp.conf.prev. Both do blocking I/O: the
daemon runs them off the reactor thread.
"""

import hashlib
import os
import stat
from dataclasses import dataclass

CONFIG_NAME = "clp.conf"
MAX_FILES = 1000
MAX_BYTES = 16 * 1024 * 1024  # the whole bundle
SKIPPED = (".prev", ".tmp", "~")  # our own backups and editors' leftovers


class BundleError(Exception):
    """The directory cannot be a configuration bundle (says which file and why)."""


@dataclass(frozen=True)
class ConfigFile:
    path: str  # relative, with '/' separators
    data: bytes
    mode: int  # permission bits (scripts keep their execute bit, the key its 0600)


@dataclass(frozen=True)
class Bundle:
    files: tuple  # of ConfigFile, sorted by path

    @property
    def config_text(self):
        return self.file(CONFIG_NAME).data

    def file(self, path):
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    @property
    def digest(self):
        h = hashlib.sha256()
        for f in self.files:
            h.update(f"{f.path}\0{f.mode:o}\0{len(f.data)}\0".encode())
            h.update(f.data)
        return h.hexdigest()

    def to_wire(self):
        """A JSON-able form (file contents as latin-1 text, exact for bytes)."""
        return [{"path": f.path, "mode": f.mode, "data": f.data.decode("latin-1")} for f in self.files]

    @classmethod
    def from_wire(cls, items):
        """@raise BundleError: for anything that is not a bundle."""
        try:
            files = [ConfigFile(check_path(str(i["path"])), str(i["data"]).encode("latin-1"), int(i["mode"]) & 0o7777)
                     for i in items]
        except (KeyError, TypeError, ValueError, UnicodeEncodeError) as e:
            raise BundleError(f"malformed configuration bundle ({type(e).__name__})") from None
        return _checked(files)


def check_path(path):
    """A relative path inside the bundle, or BundleError."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in path:
        raise BundleError(f"{path!r} is not a path inside the configuration directory")
    return path


def _checked(files):
    files = sorted(files, key=lambda f: f.path)
    if len(files) > MAX_FILES:
        raise BundleError(f"more than {MAX_FILES} files")
    if sum(len(f.data) for f in files) > MAX_BYTES:
        raise BundleError(f"larger than {MAX_BYTES} bytes")
    if CONFIG_NAME not in {f.path for f in files}:
        raise BundleError(f"no {CONFIG_NAME}")
    return Bundle(tuple(files))


def read_bundle(directory):
    """The bundle of a configuration directory; raises BundleError naming the file at fault."""
    directory = os.path.abspath(directory)
    if not os.path.isfile(os.path.join(directory, CONFIG_NAME)):
        raise BundleError(f"{directory}: no {CONFIG_NAME} in this directory")
    files, total = [], 0
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, directory).replace(os.sep, "/")
            if name.endswith(SKIPPED) or (rel.startswith(CONFIG_NAME + ".") and rel != CONFIG_NAME):
                continue
            try:
                st = os.stat(full)
                if not stat.S_ISREG(st.st_mode):
                    continue
                if not os.path.realpath(full).startswith(os.path.realpath(directory) + os.sep):
                    raise BundleError(f"{full}: a link that leaves the configuration directory")
                total += st.st_size
                if total > MAX_BYTES:
                    raise BundleError(f"{directory}: more than {MAX_BYTES} bytes")
                with open(full, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise BundleError(f"{full}: {e.strerror or e}") from None
            files.append(ConfigFile(rel, data, stat.S_IMODE(st.st_mode)))
    return _checked(files)


def install_bundle(bundle, directory):
    """Write bundle into directory (created if need be): each file through a
    temporary file and a rename; the old clp.conf is kept as clp.conf.prev.
    Files of the directory that are not in the bundle are left alone."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    current = os.path.join(directory, CONFIG_NAME)
    if os.path.exists(current):
        with open(current, "rb") as f:
            previous = f.read()
        _write(os.path.join(directory, CONFIG_NAME + ".prev"), previous, 0o600)
    # clp.conf last: a reader never sees a new clp.conf naming a script not yet written.
    for f in sorted(bundle.files, key=lambda f: f.path == CONFIG_NAME):
        target = os.path.join(directory, *f.path.split("/"))
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        _write(target, f.data, f.mode)


def _write(path, data, mode):
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode & 0o7777)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fchmod(f.fileno(), mode & 0o7777)  # the umask filtered os.open's mode
        os.fsync(f.fileno())
    os.replace(tmp, path)

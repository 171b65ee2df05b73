"""First boot: the appliance's configuration from cloud-init user data or a seed file.

User data is one of (the first found source wins, see :data:`DEFAULT_SOURCES`):

* a ``#cloud-config`` YAML document with

  - a ``sluice`` key: either the gateway TOML text itself, or a table with ``config`` (the gateway
    TOML, written to ``/etc/sluice/sluice.toml``) and optionally ``network`` (the ``[appliance]``
    TOML, written to ``/etc/sluice/network.toml`` for ``sluice-network.service``);
  - and/or ``write_files`` entries whose ``path`` lies under ``/etc/sluice/`` (keys, bundles,
    policies; ``encoding`` ``b64`` or ``gz+b64`` for binary files). Entries elsewhere are left to
    cloud-init itself.

* anything else is taken as the raw gateway TOML (a seed file such as ``/etc/sluice/seed.toml``).

:func:`parse_user_data` is pure; :func:`install_files` and :func:`check_installed` do the file I/O.
The gateway config is checked with :func:`config.gateway.load_gateway_config`, the very checker of
``sluice config check``, so the problems read the same (``file:line: key: message``).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import os
import re
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from appliance.netconfig import from_mapping
from config.errors import ConfigError, ConfigProblem
from config.gateway import GatewayConfig, load_gateway_config

ETC_DIR = Path("/etc/sluice")
CONFIG_NAME = "sluice.toml"
NETWORK_NAME = "network.toml"
DONE_MARKER = ".firstboot-done"
SEED_NAME = "seed.toml"

# Searched in this order; the first that exists is the user data.
DEFAULT_SOURCES = (
    ETC_DIR / SEED_NAME,
    Path("/var/lib/cloud/instance/user-data.txt"),
    Path("/var/lib/cloud/seed/nocloud/user-data"),
    Path("/var/lib/cloud/seed/nocloud-net/user-data"),
    # qemu: -fw_cfg name=opt/sluice/user-data,file=user-data.yaml
    Path("/sys/firmware/qemu_fw_cfg/by_name/opt/sluice/user-data/raw"),
)

MAX_USER_DATA_BYTES = 1024 * 1024
MAX_FILES = 64
DEFAULT_MODE = 0o640
_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
_CLOUD_CONFIG = b"#cloud-config"


class UserDataError(ValueError):
    """The user data cannot be used; the message names the source and the key."""


@dataclass(frozen=True, slots=True)
class SeedFile:
    """One file to write under ``/etc/sluice``: ``name`` is relative (``keys/anchor.pem``)."""

    name: str
    content: bytes
    mode: int = DEFAULT_MODE


def parse_user_data(raw: bytes, source: str) -> tuple[SeedFile, ...]:
    """Turn user data into the files to write under ``/etc/sluice`` (pure).

    Args:
        raw: the user data as read (at most :data:`MAX_USER_DATA_BYTES`).
        source: where it came from, named in error messages.

    Returns:
        The files, ``sluice.toml`` always among them.

    Raises:
        UserDataError: too large, unsupported kind (multipart, script), bad YAML, a malformed
            ``sluice`` or ``write_files`` entry, or no gateway config at all.
    """
    if len(raw) > MAX_USER_DATA_BYTES:
        raise UserDataError(f"{source}: larger than {MAX_USER_DATA_BYTES} bytes")
    head = raw.lstrip()[:64].lower()
    if head.startswith(b"content-type: multipart"):
        raise UserDataError(
            f"{source}: MIME multipart user data is not supported; use #cloud-config"
        )
    if head.startswith(b"#!"):
        raise UserDataError(f"{source}: script user data is not supported; use #cloud-config")
    if not raw.startswith(_CLOUD_CONFIG):
        return (SeedFile(CONFIG_NAME, raw),)
    return _from_cloud_config(raw, source)


def _from_cloud_config(raw: bytes, source: str) -> tuple[SeedFile, ...]:
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserDataError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(doc, dict):
        raise UserDataError(f"{source}: #cloud-config must be a YAML mapping")
    files: dict[str, SeedFile] = {}
    for seed in _write_files(doc.get("write_files"), source):
        _add(files, seed, source)
    for seed in _sluice_key(doc.get("sluice"), source):
        _add(files, seed, source)
    if CONFIG_NAME not in files:
        raise UserDataError(
            f"{source}: no sluice configuration: expected a 'sluice' key or a write_files entry "
            f"for {ETC_DIR / CONFIG_NAME}"
        )
    if len(files) > MAX_FILES:
        raise UserDataError(f"{source}: more than {MAX_FILES} files for {ETC_DIR}")
    return tuple(files.values())


def _add(files: dict[str, SeedFile], seed: SeedFile, source: str) -> None:
    if seed.name in files:
        raise UserDataError(f"{source}: {ETC_DIR / seed.name} is given twice")
    files[seed.name] = seed


def _sluice_key(value: object, source: str) -> list[SeedFile]:
    if value is None:
        return []
    if isinstance(value, str):
        return [SeedFile(CONFIG_NAME, value.encode())]
    if not isinstance(value, dict):
        raise UserDataError(f"{source}: sluice: expected the TOML text or a mapping")
    unknown = sorted(str(k) for k in value if k not in ("config", "network"))
    if unknown:
        raise UserDataError(
            f"{source}: sluice.{unknown[0]}: unknown key (expected config, network)"
        )
    out = []
    for key, name in (("config", CONFIG_NAME), ("network", NETWORK_NAME)):
        text = value.get(key)
        if text is None:
            continue
        if not isinstance(text, str):
            raise UserDataError(f"{source}: sluice.{key}: expected TOML text (a YAML string)")
        out.append(SeedFile(name, text.encode()))
    return out


def _write_files(value: object, source: str) -> list[SeedFile]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UserDataError(f"{source}: write_files: expected a list")
    out = []
    for i, entry in enumerate(value):
        key = f"write_files[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise UserDataError(f"{source}: {key}.path: expected a string")
        name = relative_name(entry["path"])
        if name is None:
            continue  # not ours: cloud-init writes it
        if name == "":
            raise UserDataError(
                f"{source}: {key}.path: {entry['path']!r} is not a plain file name under {ETC_DIR}"
            )
        out.append(SeedFile(name, _content(entry, key, source), _mode(entry, key, source)))
    return out


def relative_name(path: str) -> str | None:
    """``/etc/sluice/keys/a.pem`` -> ``keys/a.pem``; None when outside ``/etc/sluice``; ``""`` when
    inside but not acceptable (``..``, hidden or odd names, the done marker, too deep)."""
    p = PurePosixPath(path)
    if not p.is_absolute() or p.parts[: len(ETC_DIR.parts)] != ETC_DIR.parts:
        return None
    rest = p.parts[len(ETC_DIR.parts) :]
    if not rest or len(rest) > 3 or not all(_NAME_PART.fullmatch(part) for part in rest):
        return ""
    if ".." in path or rest == (DONE_MARKER,):
        return ""
    return "/".join(rest)


def _content(entry: dict[object, object], key: str, source: str) -> bytes:
    content = entry.get("content", "")
    if not isinstance(content, str):
        raise UserDataError(f"{source}: {key}.content: expected a string")
    encoding = str(entry.get("encoding", "text/plain")).lower()
    try:
        if encoding in ("text/plain", ""):
            return content.encode()
        if encoding in ("b64", "base64"):
            return base64.b64decode(_squeeze(content), validate=True)
        if encoding in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
            data = gzip.decompress(base64.b64decode(_squeeze(content), validate=True))
            if len(data) > MAX_USER_DATA_BYTES:
                raise UserDataError(f"{source}: {key}.content: larger than the limit once unzipped")
            return data
    except (binascii.Error, OSError, EOFError, zlib.error) as exc:
        raise UserDataError(
            f"{source}: {key}.content: cannot decode as {encoding}: {exc}"
        ) from None
    raise UserDataError(
        f"{source}: {key}.encoding: {encoding!r} not supported (text/plain, b64, gz+b64)"
    )


def _squeeze(b64: str) -> str:
    """Base64 as YAML block scalars carry it: line breaks and spaces are not part of the data."""
    return "".join(b64.split())


def _mode(entry: dict[object, object], key: str, source: str) -> int:
    value = entry.get("permissions")
    if value is None:
        return DEFAULT_MODE
    try:
        mode = int(str(value), 8)
    except ValueError:
        raise UserDataError(f"{source}: {key}.permissions: expected octal like '0640'") from None
    if mode & ~0o750:
        raise UserDataError(
            f"{source}: {key}.permissions: {value} grants more than 0750 "
            "(files under /etc/sluice are root's, readable by group sluice only)"
        )
    return mode


# -- I/O ------------------------------------------------------------------------------------------


def read_user_data(sources: tuple[Path, ...]) -> tuple[Path, bytes] | None:
    """The first existing source and its bytes (bounded), or None when none exists.

    Raises:
        UserDataError: the source exists but cannot be read, or is too large.
    """
    for path in sources:
        if not path.exists():
            continue
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_USER_DATA_BYTES + 1)
        except OSError as exc:
            raise UserDataError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if len(raw) > MAX_USER_DATA_BYTES:
            raise UserDataError(f"{path}: larger than {MAX_USER_DATA_BYTES} bytes")
        return path, raw
    return None


def install_files(files: tuple[SeedFile, ...], etc_dir: Path, gid: int | None) -> list[Path]:
    """Write each file atomically (temp file, fsync, rename, fsync of the directory).

    Args:
        files: from :func:`parse_user_data`.
        etc_dir: normally ``/etc/sluice``.
        gid: group given the files (the daemon's group ``sluice``), None to leave it.

    Returns:
        The paths written.

    Raises:
        OSError: a file could not be written (the earlier ones stay written).
    """
    written = []
    for seed in files:
        target = etc_dir / seed.name
        target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        if gid is not None and target.parent != etc_dir:
            os.chown(target.parent, -1, gid)
        tmp = target.with_name(f".{target.name}.firstboot-tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(seed.content)
            while view:
                view = view[os.write(fd, view) :]
            if gid is not None:
                os.fchown(fd, -1, gid)
            os.fchmod(fd, seed.mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        written.append(target)
    return written


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_installed(etc_dir: Path) -> GatewayConfig:
    """Check ``sluice.toml`` as ``sluice config check`` does (referenced files included) and,
    when present, ``network.toml`` as ``sluice appliance plan`` does.

    Raises:
        ConfigError: every problem of both files, one per line ``file:line: key: message``.
    """
    problems: list[ConfigProblem] = []
    config: GatewayConfig | None = None
    try:
        config = load_gateway_config(etc_dir / CONFIG_NAME, check_files=True)
    except ConfigError as exc:
        problems.extend(exc.problems)
    network = etc_dir / NETWORK_NAME
    if network.exists():
        problems.extend(_network_problems(network))
    if problems or config is None:
        raise ConfigError(problems)
    return config


def _network_problems(path: Path) -> tuple[ConfigProblem, ...]:
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        return (ConfigProblem(path, "", f"cannot read: {exc.strerror or exc}"),)
    except tomllib.TOMLDecodeError as exc:
        return (ConfigProblem(path, "", f"not valid TOML: {exc}"),)
    if "appliance" not in doc:
        return (ConfigProblem(path, "appliance", "missing required table"),)
    try:
        from_mapping(doc["appliance"], prefix="appliance", file=path)
    except ConfigError as exc:
        return exc.problems
    return ()


def mark_done(etc_dir: Path) -> Path:
    """Create the marker that keeps ``sluice-firstboot.service`` from running again."""
    marker = etc_dir / DONE_MARKER
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(etc_dir)
    return marker
